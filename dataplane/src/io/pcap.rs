//! Capture files without libpcap: a reader for classic pcap and pcapng, a writer for classic pcap.
//!
//! The reader accepts what tcpdump, Wireshark/dumpcap and DPDK's `dpdk-pdump` write:
//!
//! * classic pcap in either byte order, microsecond (`0xa1b2c3d4`) or nanosecond (`0xa1b23c4d`)
//!   timestamps;
//! * pcapng in either byte order (a file may hold several sections of different byte orders),
//!   with Enhanced, Simple and (obsolete) Packet blocks, per-interface `if_tsresol` and
//!   `if_tsoffset`; every other block type is skipped.
//!
//! Only Ethernet captures (link type 1) are accepted: the pipeline parses frames from the MAC
//! header on. Garbage input yields a [`PcapError`], never a panic or a huge allocation (a record
//! longer than [`MAX_RECORD_LEN`] is refused).
//!
//! The writer always writes classic pcap, little-endian, nanosecond timestamps, Ethernet,
//! snaplen [`WRITER_SNAPLEN`], which every tool reads.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The longest packet record the reader accepts (256 KiB, like tcpdump's default snaplen).
pub const MAX_RECORD_LEN: usize = 256 * 1024;

/// The snaplen written into the files [`PcapWriter`] creates; longer packets are truncated.
pub const WRITER_SNAPLEN: u32 = 262_144;

/// The longest pcapng metadata block (section or interface header) the reader accepts.
const MAX_META_BLOCK_LEN: u32 = 1 << 20;

/// LINKTYPE_ETHERNET.
const LINKTYPE_ETHERNET: u32 = 1;

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// pcapng Section Header Block type; a byte palindrome, so it reads the same in both orders.
const SHB_TYPE: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
const BYTE_ORDER_MAGIC_BE: [u8; 4] = [0x1a, 0x2b, 0x3c, 0x4d];
const BYTE_ORDER_MAGIC_LE: [u8; 4] = [0x4d, 0x3c, 0x2b, 0x1a];
const BT_IDB: u32 = 1;
const BT_PB: u32 = 2;
const BT_SPB: u32 = 3;
const BT_EPB: u32 = 6;
const OPT_ENDOFOPT: u16 = 0;
const OPT_IF_TSRESOL: u16 = 9;
const OPT_IF_TSOFFSET: u16 = 14;

const NS_PER_S: u64 = 1_000_000_000;

/// Why a capture file could not be read or written.
///
/// `record` numbers count from 1 in file order (pcapng: blocks, including non-packet blocks;
/// 0 is the file header); `offset` is the byte offset where that record starts, for hexdump.
#[derive(Debug)]
#[non_exhaustive]
pub enum PcapError {
    /// The file could not be opened or created.
    Open { path: PathBuf, source: io::Error },
    /// Reading or writing failed.
    Io(io::Error),
    /// The file starts with neither a pcap nor a pcapng magic number.
    UnknownMagic(u32),
    /// A pcap or pcapng major version this reader does not know.
    UnsupportedVersion { major: u16, minor: u16 },
    /// The capture (or a pcapng interface) is not Ethernet.
    NotEthernet { link_type: u32, record: u64 },
    /// The file ends inside a header or record.
    Truncated { record: u64, offset: u64 },
    /// A record declares more captured bytes than [`MAX_RECORD_LEN`].
    RecordTooLong { record: u64, offset: u64, len: u64 },
    /// A record's fields contradict each other or the format.
    Malformed {
        record: u64,
        offset: u64,
        what: &'static str,
    },
    /// The writer was given a timestamp that classic pcap cannot hold (after 2106).
    TimestampOutOfRange { ts_ns: u64 },
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PcapError::Open { path, source } => write!(f, "{}: {source}", path.display()),
            PcapError::Io(e) => write!(f, "capture I/O error: {e}"),
            PcapError::UnknownMagic(m) => {
                write!(f, "not a pcap or pcapng file (magic number {m:#010x})")
            }
            PcapError::UnsupportedVersion { major, minor } => {
                write!(f, "unsupported capture format version {major}.{minor}")
            }
            PcapError::NotEthernet { link_type, record } => write!(
                f,
                "record {record}: link type {link_type} is not Ethernet ({LINKTYPE_ETHERNET})"
            ),
            PcapError::Truncated { record: 0, .. } => f.write_str("truncated file header"),
            PcapError::Truncated { record, offset } => {
                write!(
                    f,
                    "record {record} (byte offset {offset}): file ends inside the record"
                )
            }
            PcapError::RecordTooLong {
                record,
                offset,
                len,
            } => write!(
                f,
                "record {record} (byte offset {offset}): captured length {len} exceeds \
                 the {MAX_RECORD_LEN}-byte limit"
            ),
            PcapError::Malformed {
                record,
                offset,
                what,
            } => write!(f, "record {record} (byte offset {offset}): {what}"),
            PcapError::TimestampOutOfRange { ts_ns } => {
                write!(f, "timestamp {ts_ns} ns does not fit a pcap record")
            }
        }
    }
}

impl std::error::Error for PcapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PcapError::Open { source, .. } => Some(source),
            PcapError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for PcapError {
    fn from(e: io::Error) -> Self {
        PcapError::Io(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn u16(self, b: [u8; 2]) -> u16 {
        match self {
            Endian::Little => u16::from_le_bytes(b),
            Endian::Big => u16::from_be_bytes(b),
        }
    }

    fn u32(self, b: [u8; 4]) -> u32 {
        match self {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        }
    }

    /// Reads a `u16` at `at`, or `None` past the end of `b`.
    fn u16_at(self, b: &[u8], at: usize) -> Option<u16> {
        let s = b.get(at..at.checked_add(2)?)?;
        Some(self.u16([s[0], s[1]]))
    }

    /// Reads a `u32` at `at`, or `None` past the end of `b`.
    fn u32_at(self, b: &[u8], at: usize) -> Option<u32> {
        let s = b.get(at..at.checked_add(4)?)?;
        Some(self.u32([s[0], s[1], s[2], s[3]]))
    }
}

/// A pcapng interface's timestamp unit (`if_tsresol`).
#[derive(Debug, Clone, Copy)]
enum TsResol {
    /// Units of 10^-n seconds.
    Pow10(u8),
    /// Units of 2^-n seconds.
    Pow2(u8),
}

impl TsResol {
    fn to_ns(self, ts: u64) -> u64 {
        match self {
            TsResol::Pow10(e) if e <= 9 => ts.saturating_mul(10u64.pow(u32::from(9 - e))),
            // 10^20 exceeds u64::MAX, so every timestamp rounds down to 0 there.
            TsResol::Pow10(e) => 10u64.checked_pow(u32::from(e - 9)).map_or(0, |d| ts / d),
            TsResol::Pow2(e) => {
                let ns = (u128::from(ts) * u128::from(NS_PER_S)).checked_shr(u32::from(e));
                ns.map_or(0, |v| u64::try_from(v).unwrap_or(u64::MAX))
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    link_type: u16,
    snaplen: u32,
    resol: TsResol,
    offset_s: i64,
}

#[derive(Debug)]
enum Format {
    Classic {
        endian: Endian,
        nanos: bool,
    },
    Ng {
        endian: Endian,
        interfaces: Vec<Interface>,
    },
}

/// Reads Ethernet frames from a classic pcap or pcapng stream.
///
/// ```no_run
/// # fn main() -> Result<(), dataplane::io::pcap::PcapError> {
/// use dataplane::io::pcap::PcapReader;
/// let mut r = PcapReader::open("client.pcap")?;
/// let mut frame = Vec::new();
/// while let Some(ts_ns) = r.next_packet(&mut frame)? {
///     println!("{ts_ns}: {} bytes", frame.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PcapReader<R: Read> {
    inner: R,
    format: Format,
    /// Bytes consumed so far.
    offset: u64,
    /// Number of the record being read (1-based; 0 while reading the file header).
    record: u64,
    /// Where the record being read starts.
    record_offset: u64,
    /// Timestamp of the previous packet, reused for Simple Packet Blocks (which have none).
    last_ts: u64,
    /// Holds pcapng metadata blocks; kept to avoid reallocating per section.
    scratch: Vec<u8>,
}

impl PcapReader<BufReader<File>> {
    /// Opens a capture file and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, PcapError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| PcapError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        PcapReader::new(BufReader::new(file))
    }
}

impl<R: Read> PcapReader<R> {
    /// Reads the file header (pcap) or first section header (pcapng) from `reader`.
    pub fn new(reader: R) -> Result<Self, PcapError> {
        let mut r = PcapReader {
            inner: reader,
            format: Format::Ng {
                endian: Endian::Little,
                interfaces: Vec::new(),
            },
            offset: 0,
            record: 0,
            record_offset: 0,
            last_ts: 0,
            scratch: Vec::new(),
        };
        let mut magic = [0u8; 4];
        r.exact(&mut magic)?;
        if magic == SHB_TYPE {
            let mut len = [0u8; 4];
            r.exact(&mut len)?;
            r.read_shb(len)?;
            return Ok(r);
        }
        let (endian, nanos) = match u32::from_le_bytes(magic) {
            MAGIC_US => (Endian::Little, false),
            MAGIC_NS => (Endian::Little, true),
            m if m.swap_bytes() == MAGIC_US => (Endian::Big, false),
            m if m.swap_bytes() == MAGIC_NS => (Endian::Big, true),
            _ => return Err(PcapError::UnknownMagic(u32::from_be_bytes(magic))),
        };
        // version (2+2), thiszone, sigfigs, snaplen, link type.
        let mut hdr = [0u8; 20];
        r.exact(&mut hdr)?;
        let major = endian.u16([hdr[0], hdr[1]]);
        let minor = endian.u16([hdr[2], hdr[3]]);
        if major != 2 {
            return Err(PcapError::UnsupportedVersion { major, minor });
        }
        // The upper 16 bits carry FCS flags (pcap-savefile(5)); the link type is the low half.
        let link_type = endian.u32([hdr[16], hdr[17], hdr[18], hdr[19]]) & 0xffff;
        if link_type != LINKTYPE_ETHERNET {
            return Err(PcapError::NotEthernet {
                link_type,
                record: 0,
            });
        }
        r.format = Format::Classic { endian, nanos };
        Ok(r)
    }

    /// Reads the next packet into `buf` (replacing its contents) and returns its timestamp in
    /// nanoseconds since the Unix epoch, or `None` at a clean end of file.
    ///
    /// After an error the reader's position is unspecified; stop reading.
    pub fn next_packet(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, PcapError> {
        match self.format {
            Format::Classic { endian, nanos } => self.next_classic(endian, nanos, buf),
            Format::Ng { .. } => self.next_ng(buf),
        }
    }

    /// Whether the stream is pcapng (as opposed to classic pcap).
    pub fn is_pcapng(&self) -> bool {
        matches!(self.format, Format::Ng { .. })
    }

    fn next_classic(
        &mut self,
        endian: Endian,
        nanos: bool,
        buf: &mut Vec<u8>,
    ) -> Result<Option<u64>, PcapError> {
        self.begin_record();
        let mut hdr = [0u8; 16];
        match self.fill(&mut hdr)? {
            0 => return Ok(None),
            16 => {}
            _ => return Err(self.truncated()),
        }
        let sec = endian.u32([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let frac = endian.u32([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let incl_len = endian.u32([hdr[8], hdr[9], hdr[10], hdr[11]]);
        self.read_data(u64::from(incl_len), buf)?;
        // u32::MAX * 1e9 + u32::MAX * 1e3 < u64::MAX: no overflow possible.
        let frac_ns = if nanos {
            u64::from(frac)
        } else {
            u64::from(frac) * 1000
        };
        let ts = u64::from(sec) * NS_PER_S + frac_ns;
        self.last_ts = ts;
        Ok(Some(ts))
    }

    fn next_ng(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, PcapError> {
        loop {
            self.begin_record();
            let mut head = [0u8; 8];
            match self.fill(&mut head)? {
                0 => return Ok(None),
                8 => {}
                _ => return Err(self.truncated()),
            }
            let len_raw = [head[4], head[5], head[6], head[7]];
            if head[..4] == SHB_TYPE {
                self.read_shb(len_raw)?;
                continue;
            }
            let endian = match self.format {
                Format::Ng { endian, .. } => endian,
                Format::Classic { .. } => return Err(self.malformed("pcapng block in pcap")),
            };
            let btype = endian.u32([head[0], head[1], head[2], head[3]]);
            let blen = endian.u32(len_raw);
            if blen % 4 != 0 || blen < 12 {
                return Err(self.malformed("bad pcapng block total length"));
            }
            match btype {
                BT_IDB => self.read_idb(endian, blen)?,
                BT_EPB | BT_PB => return self.read_epb(endian, btype, blen, buf).map(Some),
                BT_SPB => return self.read_spb(endian, blen, buf).map(Some),
                // Name resolution, statistics, secrets, custom...: not needed to replay frames.
                _ => {
                    self.skip(u64::from(blen) - 12)?;
                    self.trailer(endian, blen)?;
                }
            }
        }
    }

    /// Reads a Section Header Block after its type and (raw) length; starts a new section.
    fn read_shb(&mut self, len_raw: [u8; 4]) -> Result<(), PcapError> {
        self.record = self.record.max(1);
        let mut magic = [0u8; 4];
        self.exact(&mut magic)?;
        let endian = match magic {
            BYTE_ORDER_MAGIC_LE => Endian::Little,
            BYTE_ORDER_MAGIC_BE => Endian::Big,
            _ => return Err(self.malformed("bad pcapng byte-order magic")),
        };
        let blen = endian.u32(len_raw);
        // type, length, magic, version (2+2), section length (8), trailer.
        if blen % 4 != 0 || !(28..=MAX_META_BLOCK_LEN).contains(&blen) {
            return Err(self.malformed("bad section header block length"));
        }
        let body = self.read_meta(endian, blen, 12)?;
        let major = endian.u16_at(&body, 0).unwrap_or(0);
        let minor = endian.u16_at(&body, 2).unwrap_or(0);
        self.scratch = body;
        if major != 1 {
            return Err(PcapError::UnsupportedVersion { major, minor });
        }
        self.format = Format::Ng {
            endian,
            interfaces: Vec::new(),
        };
        Ok(())
    }

    fn read_idb(&mut self, endian: Endian, blen: u32) -> Result<(), PcapError> {
        // type, length, link type (2), reserved (2), snaplen (4), trailer.
        if !(20..=MAX_META_BLOCK_LEN).contains(&blen) {
            return Err(self.malformed("bad interface description block length"));
        }
        let body = self.read_meta(endian, blen, 8)?;
        let link_type = endian.u16_at(&body, 0).unwrap_or(0);
        let snaplen = endian.u32_at(&body, 4).unwrap_or(0);
        let mut iface = Interface {
            link_type,
            snaplen,
            resol: TsResol::Pow10(6),
            offset_s: 0,
        };
        let opts = body.get(8..body.len().saturating_sub(4)).unwrap_or(&[]);
        let parsed = for_each_option(endian, opts, |code, value| match (code, value) {
            (OPT_IF_TSRESOL, [v, ..]) => {
                iface.resol = if v & 0x80 != 0 {
                    TsResol::Pow2(v & 0x7f)
                } else {
                    TsResol::Pow10(*v)
                };
            }
            (OPT_IF_TSOFFSET, [a, b, c, d, e, f, g, h, ..]) => {
                let raw = [*a, *b, *c, *d, *e, *f, *g, *h];
                iface.offset_s = match endian {
                    Endian::Little => i64::from_le_bytes(raw),
                    Endian::Big => i64::from_be_bytes(raw),
                };
            }
            _ => {}
        });
        self.scratch = body;
        parsed.map_err(|what| self.malformed(what))?;
        if let Format::Ng { interfaces, .. } = &mut self.format {
            // An absurd number of interfaces in a garbage file must not grow memory unboundedly.
            if interfaces.len() >= 65_536 {
                return Err(self.malformed("too many interfaces"));
            }
            interfaces.push(iface);
        }
        Ok(())
    }

    /// Enhanced Packet Block, or the obsolete Packet Block (same layout, 16-bit interface id).
    fn read_epb(
        &mut self,
        endian: Endian,
        btype: u32,
        blen: u32,
        buf: &mut Vec<u8>,
    ) -> Result<u64, PcapError> {
        if blen < 32 {
            return Err(self.malformed("packet block too short"));
        }
        let mut f = [0u8; 20];
        self.exact(&mut f)?;
        let if_id = if btype == BT_PB {
            u32::from(endian.u16([f[0], f[1]]))
        } else {
            endian.u32([f[0], f[1], f[2], f[3]])
        };
        let ts_units = (u64::from(endian.u32([f[4], f[5], f[6], f[7]])) << 32)
            | u64::from(endian.u32([f[8], f[9], f[10], f[11]]));
        let cap_len = u64::from(endian.u32([f[12], f[13], f[14], f[15]]));
        let room = u64::from(blen) - 32;
        if cap_len > room {
            return Err(self.malformed("captured length runs past the block"));
        }
        let iface = self.interface(if_id)?;
        self.read_data(cap_len, buf)?;
        self.skip(room - cap_len)?;
        self.trailer(endian, blen)?;
        let ts = iface
            .resol
            .to_ns(ts_units)
            .saturating_add_signed(iface.offset_s.saturating_mul(NS_PER_S as i64));
        self.last_ts = ts;
        Ok(ts)
    }

    fn read_spb(&mut self, endian: Endian, blen: u32, buf: &mut Vec<u8>) -> Result<u64, PcapError> {
        if blen < 16 {
            return Err(self.malformed("simple packet block too short"));
        }
        let mut f = [0u8; 4];
        self.exact(&mut f)?;
        let orig_len = u64::from(endian.u32(f));
        let iface = self.interface(0)?;
        let room = u64::from(blen) - 16;
        // The captured length is implicit: the original length cut to the snaplen and block.
        let mut cap_len = orig_len.min(room);
        if iface.snaplen != 0 {
            cap_len = cap_len.min(u64::from(iface.snaplen));
        }
        self.read_data(cap_len, buf)?;
        self.skip(room - cap_len)?;
        self.trailer(endian, blen)?;
        Ok(self.last_ts)
    }

    /// The Ethernet interface `id` of the current section.
    fn interface(&self, id: u32) -> Result<Interface, PcapError> {
        let iface = match &self.format {
            Format::Ng { interfaces, .. } => usize::try_from(id)
                .ok()
                .and_then(|i| interfaces.get(i))
                .copied(),
            Format::Classic { .. } => None,
        };
        let iface = iface.ok_or_else(|| self.malformed("packet from an undeclared interface"))?;
        if u32::from(iface.link_type) != LINKTYPE_ETHERNET {
            return Err(PcapError::NotEthernet {
                link_type: u32::from(iface.link_type),
                record: self.record,
            });
        }
        Ok(iface)
    }

    /// Reads the rest of a metadata block of total length `blen`, of which `consumed` bytes
    /// were already read, into the scratch buffer and checks the trailer. Returns the buffer
    /// (trailer included), which the caller puts back into `self.scratch`.
    fn read_meta(
        &mut self,
        endian: Endian,
        blen: u32,
        consumed: u32,
    ) -> Result<Vec<u8>, PcapError> {
        let mut body = std::mem::take(&mut self.scratch);
        body.clear();
        body.resize(blen.saturating_sub(consumed) as usize, 0);
        let read = self.exact(&mut body);
        let trailer = endian.u32_at(&body, body.len().saturating_sub(4));
        if let Err(e) = read {
            self.scratch = body;
            return Err(e);
        }
        if trailer != Some(blen) {
            self.scratch = body;
            return Err(self.malformed("trailing block length does not match"));
        }
        Ok(body)
    }

    fn read_data(&mut self, len: u64, buf: &mut Vec<u8>) -> Result<(), PcapError> {
        if len > MAX_RECORD_LEN as u64 {
            return Err(PcapError::RecordTooLong {
                record: self.record,
                offset: self.record_offset,
                len,
            });
        }
        buf.clear();
        buf.resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
        self.exact(buf)
    }

    fn trailer(&mut self, endian: Endian, blen: u32) -> Result<(), PcapError> {
        let mut t = [0u8; 4];
        self.exact(&mut t)?;
        if endian.u32(t) != blen {
            return Err(self.malformed("trailing block length does not match"));
        }
        Ok(())
    }

    fn begin_record(&mut self) {
        self.record = self.record.saturating_add(1);
        self.record_offset = self.offset;
    }

    /// Reads until `buf` is full or the stream ends; returns how many bytes were read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, PcapError> {
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PcapError::Io(e)),
            }
        }
        self.offset += n as u64;
        Ok(n)
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), PcapError> {
        if self.fill(buf)? < buf.len() {
            return Err(self.truncated());
        }
        Ok(())
    }

    fn skip(&mut self, n: u64) -> Result<(), PcapError> {
        let skipped = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        self.offset += skipped;
        if skipped < n {
            return Err(self.truncated());
        }
        Ok(())
    }

    fn truncated(&self) -> PcapError {
        PcapError::Truncated {
            record: self.record,
            offset: self.record_offset,
        }
    }

    fn malformed(&self, what: &'static str) -> PcapError {
        PcapError::Malformed {
            record: self.record,
            offset: self.record_offset,
            what,
        }
    }
}

/// Calls `f(code, value)` for each pcapng option in `opts` up to `opt_endofopt`.
fn for_each_option(
    endian: Endian,
    mut opts: &[u8],
    mut f: impl FnMut(u16, &[u8]),
) -> Result<(), &'static str> {
    while let (Some(code), Some(len)) = (endian.u16_at(opts, 0), endian.u16_at(opts, 2)) {
        if code == OPT_ENDOFOPT {
            break;
        }
        let len = usize::from(len);
        let value = opts.get(4..4 + len).ok_or("option runs past its block")?;
        f(code, value);
        // Values are padded to 32 bits; tolerate a missing pad after the last option.
        opts = opts.get(4 + ((len + 3) & !3)..).unwrap_or(&[]);
    }
    Ok(())
}

/// The resolution of a written file's timestamps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Resolution {
    #[default]
    Nanoseconds,
    /// The original format, for readers that know no other (pktgen-DPDK 23.06 among them).
    Microseconds,
}

/// Writes Ethernet frames as a classic pcap file (little-endian; nanosecond timestamps unless
/// made with [`Resolution::Microseconds`]).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    inner: W,
    resolution: Resolution,
}

impl PcapWriter<BufWriter<File>> {
    /// Creates (or truncates) `path` and writes the file header.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, PcapError> {
        Self::create_with(path, Resolution::Nanoseconds)
    }

    /// As [`create`](Self::create), with timestamps of `resolution`.
    pub fn create_with(path: impl AsRef<Path>, resolution: Resolution) -> Result<Self, PcapError> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| PcapError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        PcapWriter::with_resolution(BufWriter::new(file), resolution)
    }
}

impl<W: Write> PcapWriter<W> {
    /// Writes the 24-byte file header to `writer`.
    pub fn new(writer: W) -> Result<Self, PcapError> {
        Self::with_resolution(writer, Resolution::Nanoseconds)
    }

    /// Writes the file header for timestamps of `resolution` to `writer`.
    pub fn with_resolution(mut writer: W, resolution: Resolution) -> Result<Self, PcapError> {
        let magic = match resolution {
            Resolution::Nanoseconds => MAGIC_NS,
            Resolution::Microseconds => MAGIC_US,
        };
        let mut hdr = [0u8; 24];
        hdr[0..4].copy_from_slice(&magic.to_le_bytes());
        hdr[4..6].copy_from_slice(&2u16.to_le_bytes());
        hdr[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay 0.
        hdr[16..20].copy_from_slice(&WRITER_SNAPLEN.to_le_bytes());
        hdr[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        writer.write_all(&hdr)?;
        Ok(PcapWriter {
            inner: writer,
            resolution,
        })
    }

    /// Appends one frame captured at `ts_ns` (nanoseconds since the Unix epoch). Frames longer
    /// than [`WRITER_SNAPLEN`] are truncated, with their original length recorded, as a capture
    /// tool would.
    pub fn write_packet(&mut self, ts_ns: u64, data: &[u8]) -> Result<(), PcapError> {
        let sec = u32::try_from(ts_ns / NS_PER_S)
            .map_err(|_| PcapError::TimestampOutOfRange { ts_ns })?;
        let frac = match self.resolution {
            Resolution::Nanoseconds => (ts_ns % NS_PER_S) as u32,
            Resolution::Microseconds => (ts_ns % NS_PER_S / 1000) as u32,
        };
        let orig_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let incl_len = orig_len.min(WRITER_SNAPLEN);
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&sec.to_le_bytes());
        hdr[4..8].copy_from_slice(&frac.to_le_bytes());
        hdr[8..12].copy_from_slice(&incl_len.to_le_bytes());
        hdr[12..16].copy_from_slice(&orig_len.to_le_bytes());
        self.inner.write_all(&hdr)?;
        self.inner.write_all(&data[..incl_len as usize])?;
        Ok(())
    }

    /// Flushes buffered records to the underlying writer.
    pub fn flush(&mut self) -> Result<(), PcapError> {
        self.inner.flush()?;
        Ok(())
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> Result<W, PcapError> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An Ethernet header plus 2 bytes, used as the packet in the fixtures.
    const FRAME: [u8; 16] = [
        0x02, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x01, 0xfe, 0x08, 0x00, 0x45,
        0x00,
    ];

    fn read_all(bytes: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, PcapError> {
        let mut r = PcapReader::new(bytes)?;
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(ts) = r.next_packet(&mut buf)? {
            out.push((ts, buf.clone()));
        }
        Ok(out)
    }

    /// Classic pcap, little-endian, microseconds: one 16-byte record at
    /// 1_700_000_000.123456 s (orig_len 60, as a capture with padding stripped would say).
    fn classic_le_us() -> Vec<u8> {
        let mut f = vec![
            0xd4, 0xc3, 0xb2, 0xa1, // magic
            0x02, 0x00, 0x04, 0x00, // version 2.4
            0x00, 0x00, 0x00, 0x00, // thiszone
            0x00, 0x00, 0x00, 0x00, // sigfigs
            0xff, 0xff, 0x00, 0x00, // snaplen 65535
            0x01, 0x00, 0x00, 0x00, // Ethernet
            0x00, 0xf1, 0x53, 0x65, // ts_sec 1_700_000_000
            0x40, 0xe2, 0x01, 0x00, // ts_usec 123456
            0x10, 0x00, 0x00, 0x00, // incl_len 16
            0x3c, 0x00, 0x00, 0x00, // orig_len 60
        ];
        f.extend_from_slice(&FRAME);
        f
    }

    /// Classic pcap, big-endian, nanoseconds: two records.
    fn classic_be_ns() -> Vec<u8> {
        let mut f = vec![
            0xa1, 0xb2, 0x3c, 0x4d, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
            // record 1: 1 s + 5 ns, 16 bytes
            0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,
            0x00, 0x10,
        ];
        f.extend_from_slice(&FRAME);
        // record 2: 2 s + 999_999_999 ns, 1 byte
        f.extend_from_slice(&[
            0x00, 0x00, 0x00, 0x02, 0x3b, 0x9a, 0xc9, 0xff, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x01, 0xab,
        ]);
        f
    }

    /// A little-endian pcapng: SHB, IDB (if_tsresol = 9: nanoseconds), an unknown block,
    /// EPB, SPB, a name resolution block, EPB.
    fn pcapng_le() -> Vec<u8> {
        let mut f = vec![
            // SHB, 28 bytes, no options
            0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0x00, 0x00, 0x00, 0x4d, 0x3c, 0x2b, 0x1a, 0x01, 0x00,
            0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1c, 0x00, 0x00, 0x00,
            // IDB, 32 bytes: Ethernet, snaplen 0, if_tsresol=9, opt_endofopt
            0x01, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x09, 0x00, 0x01, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x20, 0x00, 0x00, 0x00, // unknown block type 0x0bad, 16 bytes
            0xad, 0x0b, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x10, 0x00,
            0x00, 0x00,
            // EPB, 48 bytes: interface 0, ts = 0x0000_0001_0000_0002 ns, 16 of 60 bytes
            0x06, 0x00, 0x00, 0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
            0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x00,
        ];
        f.extend_from_slice(&FRAME);
        f.extend_from_slice(&[0x30, 0x00, 0x00, 0x00]);
        // SPB, 20 bytes: original length 3, padded to 4
        f.extend_from_slice(&[
            0x03, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0xaa, 0xbb,
            0xcc, 0x00, 0x14, 0x00, 0x00, 0x00,
        ]);
        // NRB with just opt_endofrecord, 16 bytes
        f.extend_from_slice(&[
            0x04, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00,
            0x00, 0x00,
        ]);
        // EPB, 36 bytes: ts = 7 ns, 2 bytes
        f.extend_from_slice(&[
            0x06, 0x00, 0x00, 0x00, 0x24, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
            0x12, 0x34, 0x00, 0x00, 0x24, 0x00, 0x00, 0x00,
        ]);
        f
    }

    /// A big-endian pcapng with the default (microsecond) resolution and an if_tsoffset of 10 s.
    fn pcapng_be() -> Vec<u8> {
        let mut f = vec![
            // SHB, 28 bytes
            0x0a, 0x0d, 0x0d, 0x0a, 0x00, 0x00, 0x00, 0x1c, 0x1a, 0x2b, 0x3c, 0x4d, 0x00, 0x01,
            0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x1c,
            // IDB, 36 bytes: Ethernet, snaplen 65535, if_tsoffset = 10
            0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x24, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
            0xff, 0xff, 0x00, 0x0e, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x24,
            // EPB, 48 bytes: ts = 1_500_000 us
            0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x16, 0xe3, 0x60, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x10,
        ];
        f.extend_from_slice(&FRAME);
        f.extend_from_slice(&[0x00, 0x00, 0x00, 0x30]);
        f
    }

    #[test]
    fn classic_little_endian_microseconds() {
        let pkts = read_all(&classic_le_us()).unwrap();
        assert_eq!(pkts, vec![(1_700_000_000_123_456_000, FRAME.to_vec())]);
        assert!(!PcapReader::new(&classic_le_us()[..]).unwrap().is_pcapng());
    }

    #[test]
    fn classic_big_endian_nanoseconds() {
        let pkts = read_all(&classic_be_ns()).unwrap();
        assert_eq!(
            pkts,
            vec![(1_000_000_005, FRAME.to_vec()), (2_999_999_999, vec![0xab]),]
        );
    }

    #[test]
    fn pcapng_little_endian_blocks() {
        assert!(PcapReader::new(&pcapng_le()[..]).unwrap().is_pcapng());
        let pkts = read_all(&pcapng_le()).unwrap();
        assert_eq!(
            pkts,
            vec![
                ((1 << 32) | 2, FRAME.to_vec()),
                // SPBs carry no timestamp: the previous packet's is reused.
                ((1 << 32) | 2, vec![0xaa, 0xbb, 0xcc]),
                (7, vec![0x12, 0x34]),
            ]
        );
    }

    #[test]
    fn pcapng_big_endian_with_tsoffset() {
        let pkts = read_all(&pcapng_be()).unwrap();
        assert_eq!(pkts, vec![(11_500_000_000, FRAME.to_vec())]);
    }

    #[test]
    fn pcapng_second_section_changes_byte_order() {
        let mut f = pcapng_le();
        f.extend_from_slice(&pcapng_be());
        let pkts = read_all(&f).unwrap();
        assert_eq!(pkts.len(), 4);
        assert_eq!(pkts[3], (11_500_000_000, FRAME.to_vec()));
    }

    #[test]
    fn pcapng_interfaces_reset_per_section() {
        // A section whose EPB names interface 0 without an IDB in that section.
        let mut f = pcapng_le();
        let mut second = pcapng_be();
        second.drain(28..64);
        f.extend_from_slice(&second);
        let err = read_all(&f).unwrap_err();
        assert!(
            matches!(err, PcapError::Malformed { record: 9, what, .. } if what.contains("interface")),
            "{err}"
        );
    }

    #[test]
    fn tsresol_units() {
        assert_eq!(TsResol::Pow10(6).to_ns(3), 3_000);
        assert_eq!(TsResol::Pow10(9).to_ns(3), 3);
        assert_eq!(TsResol::Pow10(12).to_ns(3_000), 3);
        assert_eq!(TsResol::Pow10(0).to_ns(2), 2_000_000_000);
        assert_eq!(TsResol::Pow10(127).to_ns(u64::MAX), 0);
        assert_eq!(TsResol::Pow10(0).to_ns(u64::MAX), u64::MAX);
        assert_eq!(TsResol::Pow2(10).to_ns(1024), 1_000_000_000);
        assert_eq!(TsResol::Pow2(127).to_ns(u64::MAX), 0);
        assert_eq!(TsResol::Pow2(0).to_ns(u64::MAX), u64::MAX);
    }

    #[test]
    fn pcapng_pow2_tsresol() {
        let mut f = pcapng_le();
        // if_tsresol value at offset 28 + 20: 2^-10 s units; ts 2^32 + 2 units.
        f[48] = 0x8a;
        let pkts = read_all(&f).unwrap();
        assert_eq!(
            pkts[0].0,
            ((((1u128 << 32) + 2) * 1_000_000_000) >> 10) as u64
        );
    }

    #[test]
    fn not_ethernet_is_refused() {
        let mut f = classic_le_us();
        f[20] = 113; // Linux cooked capture
        let err = PcapReader::new(&f[..]).unwrap_err();
        assert!(matches!(
            err,
            PcapError::NotEthernet {
                link_type: 113,
                record: 0
            }
        ));
        assert_eq!(
            err.to_string(),
            "record 0: link type 113 is not Ethernet (1)"
        );

        let mut f = pcapng_le();
        f[36] = 101; // raw IP
        let err = read_all(&f).unwrap_err();
        assert!(
            matches!(
                err,
                PcapError::NotEthernet {
                    link_type: 101,
                    record: 4
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_magic_and_version() {
        let err = PcapReader::new(&b"GET / HTTP/1.1\r\n\r\n\r\n\r\n\r\n"[..]).unwrap_err();
        assert!(matches!(err, PcapError::UnknownMagic(0x4745_5420)));
        assert_eq!(
            err.to_string(),
            "not a pcap or pcapng file (magic number 0x47455420)"
        );
        let mut f = classic_le_us();
        f[4] = 3;
        assert!(matches!(
            PcapReader::new(&f[..]).unwrap_err(),
            PcapError::UnsupportedVersion { major: 3, minor: 4 }
        ));
        let mut f = pcapng_le();
        f[12] = 2;
        assert!(matches!(
            PcapReader::new(&f[..]).unwrap_err(),
            PcapError::UnsupportedVersion { major: 2, minor: 0 }
        ));
    }

    #[test]
    fn empty_input_is_truncated_header() {
        let err = PcapReader::new(&[][..]).unwrap_err();
        assert!(matches!(err, PcapError::Truncated { record: 0, .. }));
        assert_eq!(err.to_string(), "truncated file header");
    }

    #[test]
    fn record_too_long() {
        let mut f = classic_le_us();
        f[32..36].copy_from_slice(&0x0004_0001u32.to_le_bytes());
        let err = read_all(&f).unwrap_err();
        assert!(matches!(
            err,
            PcapError::RecordTooLong {
                record: 1,
                offset: 24,
                len: 0x4_0001
            }
        ));
        assert_eq!(
            err.to_string(),
            "record 1 (byte offset 24): captured length 262145 exceeds the 262144-byte limit"
        );
    }

    #[test]
    fn pcapng_bad_lengths() {
        // EPB captured length beyond the block.
        let mut f = pcapng_le();
        f[76 + 20] = 0x20;
        let err = read_all(&f).unwrap_err();
        assert!(
            matches!(
                err,
                PcapError::Malformed {
                    record: 4,
                    offset: 76,
                    ..
                }
            ),
            "{err}"
        );
        // Trailer disagrees.
        let mut f = pcapng_le();
        f[76 + 44] = 0x2c;
        assert!(matches!(
            read_all(&f).unwrap_err(),
            PcapError::Malformed { record: 4, .. }
        ));
        // Block length not a multiple of 4.
        let mut f = pcapng_le();
        f[60 + 4] = 0x11;
        assert!(matches!(
            read_all(&f).unwrap_err(),
            PcapError::Malformed { record: 3, .. }
        ));
        // Bad byte-order magic.
        let mut f = pcapng_le();
        f[8] = 0;
        assert!(matches!(
            PcapReader::new(&f[..]).unwrap_err(),
            PcapError::Malformed { record: 1, .. }
        ));
        // Option running past the IDB.
        let mut f = pcapng_le();
        f[28 + 18] = 0x40;
        assert!(matches!(
            read_all(&f).unwrap_err(),
            PcapError::Malformed { record: 2, .. }
        ));
    }

    /// Cutting a file anywhere: a cut on a record boundary reads the records before it, any
    /// other cut is an error. Never a panic.
    fn check_truncations(file: &[u8], boundaries: &[usize]) {
        for cut in 0..file.len() {
            let res = read_all(&file[..cut]);
            match boundaries.iter().position(|&b| b == cut) {
                Some(n) => assert_eq!(res.unwrap().len(), n, "cut at {cut}"),
                None => {
                    let err = res.unwrap_err();
                    assert!(
                        matches!(err, PcapError::Truncated { .. }),
                        "cut at {cut}: {err}"
                    );
                }
            }
        }
        assert_eq!(read_all(file).unwrap().len(), boundaries.len());
    }

    #[test]
    fn truncated_at_every_length() {
        check_truncations(&classic_le_us(), &[24]);
        check_truncations(&classic_be_ns(), &[24, 56]);
        // pcapng block boundaries: SHB, IDB, unknown block (no packet yet), EPB, SPB, NRB; the
        // end of any block is a clean end of file.
        let f = pcapng_le();
        for cut in 0..f.len() {
            let res = read_all(&f[..cut]);
            let expected = match cut {
                28 | 60 | 76 => Some(0),
                124 => Some(1),
                144 | 160 => Some(2),
                _ => None,
            };
            match expected {
                Some(n) => assert_eq!(res.unwrap().len(), n, "cut at {cut}"),
                None => assert!(
                    matches!(res, Err(PcapError::Truncated { .. })),
                    "cut at {cut}: {res:?}"
                ),
            }
        }
    }

    #[test]
    fn writer_empty_capture_is_header_only() {
        let w = PcapWriter::new(Vec::new()).unwrap();
        let bytes = w.into_inner().unwrap();
        assert_eq!(
            bytes,
            [
                0x4d, 0x3c, 0xb2, 0xa1, 0x02, 0x00, 0x04, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00,
                0x04, 0x00, 0x01, 0x00, 0x00, 0x00
            ]
        );
        assert_eq!(read_all(&bytes).unwrap(), vec![]);
    }

    #[test]
    fn writer_record_layout() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write_packet(1_000_000_005, &[0xab, 0xcd]).unwrap();
        let bytes = w.into_inner().unwrap();
        assert_eq!(
            &bytes[24..],
            &[1, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0xab, 0xcd]
        );
    }

    #[test]
    fn microsecond_files_have_the_original_magic_and_read_back() {
        let mut w = PcapWriter::with_resolution(Vec::new(), Resolution::Microseconds).unwrap();
        w.write_packet(1_000_123_456, &[0xab]).unwrap();
        let bytes = w.into_inner().unwrap();
        assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(&bytes[24..32], &[1, 0, 0, 0, 123, 0, 0, 0]); // 123 µs: the 456 ns go
        let packets = read_all(&bytes).unwrap();
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].0, 1_000_123_000);
    }

    #[test]
    fn writer_truncates_at_snaplen_and_refuses_far_future() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let big = vec![0x5a; WRITER_SNAPLEN as usize + 10];
        w.write_packet(0, &big).unwrap();
        let err = w.write_packet(u64::from(u32::MAX) * NS_PER_S + NS_PER_S, &[]);
        assert!(matches!(err, Err(PcapError::TimestampOutOfRange { .. })));
        let bytes = w.into_inner().unwrap();
        assert_eq!(&bytes[32..36], &WRITER_SNAPLEN.to_le_bytes());
        assert_eq!(&bytes[36..40], &(WRITER_SNAPLEN + 10).to_le_bytes());
        let pkts = read_all(&bytes).unwrap();
        assert_eq!(pkts.len(), 1);
        assert_eq!(pkts[0].1.len(), WRITER_SNAPLEN as usize);
    }

    #[test]
    fn file_roundtrip() {
        let dir = std::env::temp_dir().join(format!("vpnlb-pcap-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rt.pcap");
        let mut w = PcapWriter::create(&path).unwrap();
        w.write_packet(1_700_000_000_000_000_001, &FRAME).unwrap();
        w.write_packet(1_700_000_000_500_000_000, &FRAME[..14])
            .unwrap();
        w.flush().unwrap();
        drop(w);
        let mut r = PcapReader::open(&path).unwrap();
        let mut buf = vec![0xee; 100];
        assert_eq!(
            r.next_packet(&mut buf).unwrap(),
            Some(1_700_000_000_000_000_001)
        );
        assert_eq!(buf, FRAME);
        assert_eq!(
            r.next_packet(&mut buf).unwrap(),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(buf, &FRAME[..14]);
        assert_eq!(r.next_packet(&mut buf).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();

        let err = PcapReader::open(dir.join("missing.pcap")).unwrap_err();
        assert!(err.to_string().contains("missing.pcap"), "{err}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_all(&bytes);
        }

        #[test]
        fn random_bytes_after_valid_headers_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..512),
            which in 0..4usize,
        ) {
            let mut f = match which {
                0 => classic_le_us()[..24].to_vec(),
                1 => classic_be_ns()[..24].to_vec(),
                2 => pcapng_le()[..60].to_vec(),
                _ => pcapng_be()[..64].to_vec(),
            };
            f.extend_from_slice(&tail);
            let _ = read_all(&f);
        }

        #[test]
        fn mutated_fixtures_never_panic(
            which in 0..4usize,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut f = match which {
                0 => classic_le_us(),
                1 => classic_be_ns(),
                2 => pcapng_le(),
                _ => pcapng_be(),
            };
            for (at, v) in edits {
                let i = at.index(f.len());
                f[i] = v;
            }
            let _ = read_all(&f);
        }

        #[test]
        fn write_then_read_back(
            pkts in proptest::collection::vec(
                (0..u64::from(u32::MAX) * NS_PER_S, proptest::collection::vec(any::<u8>(), 0..200)),
                0..20,
            ),
        ) {
            let mut w = PcapWriter::new(Vec::new()).unwrap();
            for (ts, data) in &pkts {
                w.write_packet(*ts, data).unwrap();
            }
            let bytes = w.into_inner().unwrap();
            prop_assert_eq!(read_all(&bytes).unwrap(), pkts);
        }
    }
}

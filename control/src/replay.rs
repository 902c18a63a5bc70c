//! `vpnlbd replay`: the worker pipeline over capture files.
//!
//! Input captures (one per port) are merged by timestamp and fed to one [`Pipeline`] in bursts,
//! exactly as a poll-mode worker would see them; the capture timestamps are the clock, so
//! persistence timeouts replay faithfully. What the appliance transmits on each port is written
//! to `<out-dir>/<port>.pcap` with the timestamp of the frame that caused it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dataplane::counters::WorkerCounters;
use dataplane::fragment::Fragments;
use dataplane::frame::{Frame, VecFrame, DEFAULT_HEADROOM};
use dataplane::hold::HoldQueue;
use dataplane::io::pcap::{PcapError, PcapReader, PcapWriter};
use dataplane::model::{ApplianceSpec, Snapshot, SnapshotError};
use dataplane::pipeline::{Pipeline, Verdict, MAX_BURST};
use serde::Serialize;

/// One `--in PORT=CAPTURE` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub port: String,
    pub path: PathBuf,
}

/// An `--in` argument that is not `PORT=CAPTURE`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not PORT=CAPTURE")]
pub struct InputError {
    pub given: String,
}

impl std::str::FromStr for Input {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, InputError> {
        let bad = || InputError {
            given: s.to_string(),
        };
        let (port, path) = s.split_once('=').ok_or_else(bad)?;
        if port.is_empty() || path.is_empty() {
            return Err(bad());
        }
        Ok(Input {
            port: port.to_string(),
            path: PathBuf::from(path),
        })
    }
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// `--in` names a port the configuration does not have.
    #[error("--in names port `{0}`, which the config does not have")]
    UnknownPort(String),
    /// A capture cannot be read or written.
    #[error("{}: {error}", path.display())]
    Capture {
        path: PathBuf,
        #[source]
        error: PcapError,
    },
    /// The output directory cannot be made.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// The configuration's snapshot cannot be built.
    #[error("config: {0}")]
    Snapshot(#[from] SnapshotError),
}

/// Per-port frame counts of a replay.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PortReport {
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// One affinity entry at the end of the replay.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AffinityReport {
    pub client: IpAddr,
    pub service: String,
    pub gateway: String,
    pub confirmed: bool,
    pub last_seen: u32,
}

/// Per-gateway numbers, by name.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct GatewayReport {
    pub service: String,
    pub gateway: String,
    #[serde(flatten)]
    pub counters: dataplane::counters::GatewayCounters,
    /// Clients whose entry names this gateway at the end of the replay.
    pub clients: u64,
}

/// What `vpnlbd replay` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub ports: BTreeMap<String, PortReport>,
    pub counters: WorkerCounters,
    pub gateways: Vec<GatewayReport>,
    pub affinity_entries: usize,
    pub sni_top: Vec<(String, u64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Vec<AffinityReport>>,
}

struct Source {
    port: u16,
    reader: PcapReader<std::io::BufReader<std::fs::File>>,
    path: PathBuf,
    /// The next frame and its timestamp, if any.
    next: Option<(u64, Vec<u8>)>,
}

impl Source {
    fn advance(&mut self) -> Result<(), ReplayError> {
        let mut buf = self.next.take().map(|(_, b)| b).unwrap_or_default();
        self.next = match self.reader.next_packet(&mut buf) {
            Ok(Some(ts)) => Some((ts, buf)),
            Ok(None) => None,
            Err(error) => {
                return Err(ReplayError::Capture {
                    path: self.path.clone(),
                    error,
                })
            }
        };
        Ok(())
    }
}

/// Replays `inputs` through the pipeline configured by `spec`, writing `out_dir/<port>.pcap`.
pub fn run(
    spec: ApplianceSpec,
    inputs: &[Input],
    out_dir: &Path,
    with_affinity: bool,
) -> Result<Report, ReplayError> {
    let snap = Arc::new(Snapshot::build(spec, 1)?);
    let port_names: Vec<String> = snap.spec.ports.iter().map(|p| p.name.clone()).collect();
    let mut sources = open_sources(inputs, &port_names)?;
    let mut writers = create_writers(out_dir, &port_names)?;
    let mut ports: BTreeMap<String, PortReport> = port_names
        .iter()
        .map(|n| (n.clone(), PortReport::default()))
        .collect();

    let mut pipeline = Pipeline::new(Arc::clone(&snap));
    let mut frames: Vec<VecFrame> = (0..MAX_BURST).map(|_| VecFrame::new(&[])).collect();
    let mut stamps = [0u64; MAX_BURST];
    let mut verdicts = [Verdict::ToControl; MAX_BURST];
    // One fragment at a time, as the daemon writes each into an mbuf.
    let mut fragment = vec![0u8; usize::from(u16::MAX)];
    // Frames waiting for a neighbor: a capture's snapshot never learns one, so they wait as a
    // worker's would, and time out (counted) on the capture's clock.
    let mut held = HoldQueue::with_defaults();
    // Each round takes the source with the oldest next frame; ties go to the first listed.
    while let Some(i) = sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.next.as_ref().map(|(ts, _)| (*ts, i)))
        .min()
        .map(|(_, i)| i)
    {
        // A burst: consecutive frames of that source within the same second, oldest first, as
        // long as no other source has an older frame.
        let mut n = 0;
        let port = sources[i].port;
        let mut now = 0u32;
        while n < MAX_BURST {
            let Some((ts, _)) = sources[i].next.as_ref() else {
                break;
            };
            let ts = *ts;
            let secs = seconds(ts);
            let older_elsewhere = sources
                .iter()
                .enumerate()
                .any(|(j, s)| j != i && s.next.as_ref().is_some_and(|(t, _)| *t < ts));
            if n > 0 && (secs != now || older_elsewhere) {
                break;
            }
            now = secs;
            if let Some((_, data)) = sources[i].next.as_ref() {
                frames[n].reset(data, DEFAULT_HEADROOM);
            }
            stamps[n] = ts;
            n += 1;
            sources[i].advance()?;
        }
        if let Some(p) = ports.get_mut(&port_names[usize::from(port)]) {
            p.rx_packets += n as u64;
        }
        let now_ms = stamps[0] / 1_000_000;
        pipeline.expire_held(&mut held, now_ms, drop);
        pipeline.process_burst(now, port, &mut frames[..n], &mut verdicts[..n]);
        for ((frame, verdict), ts) in frames[..n].iter().zip(&verdicts[..n]).zip(&stamps[..n]) {
            if let Verdict::AwaitNeighbor { port, next_hop } = *verdict {
                let _ = pipeline.hold(&mut held, port, next_hop, frame.clone(), now_ms);
            }
            let (p, mtu) = match *verdict {
                Verdict::Tx { port } => (usize::from(port), None),
                Verdict::Fragment { port, mtu } => (usize::from(port), Some(mtu)),
                _ => continue,
            };
            let path = out_dir.join(format!("{}.pcap", port_names[p]));
            let mut write = |bytes: &[u8]| {
                writers[p]
                    .write_packet(*ts, bytes)
                    .map_err(|error| ReplayError::Capture {
                        path: path.clone(),
                        error,
                    })
            };
            let sent = match mtu {
                None => write(frame.bytes()).map(|()| 1)?,
                Some(mtu) => write_fragments(frame.bytes(), mtu, &mut fragment, &mut write)?,
            };
            if let Some(r) = ports.get_mut(&port_names[p]) {
                r.tx_packets += sent;
            }
        }
    }
    pipeline.expire_held(&mut held, u64::MAX, drop);
    for (w, name) in writers.iter_mut().zip(&port_names) {
        w.flush().map_err(|error| ReplayError::Capture {
            path: out_dir.join(format!("{name}.pcap")),
            error,
        })?;
    }
    Ok(report(&pipeline, &snap, ports, with_affinity))
}

/// Each input capture as a source of frames for its port, its first frame read.
fn open_sources(inputs: &[Input], port_names: &[String]) -> Result<Vec<Source>, ReplayError> {
    let mut sources = Vec::new();
    for input in inputs {
        // Port ids are u16 (the configuration refuses more ports).
        let port = (0..=u16::MAX)
            .zip(port_names)
            .find_map(|(id, n)| (*n == input.port).then_some(id))
            .ok_or_else(|| ReplayError::UnknownPort(input.port.clone()))?;
        let reader = PcapReader::open(&input.path).map_err(|error| ReplayError::Capture {
            path: input.path.clone(),
            error,
        })?;
        let mut src = Source {
            port,
            reader,
            path: input.path.clone(),
            next: None,
        };
        src.advance()?;
        sources.push(src);
    }
    Ok(sources)
}

/// The writer of one output capture.
type Writer = PcapWriter<std::io::BufWriter<std::fs::File>>;

/// `out_dir/<port>.pcap` for every port, `out_dir` made if need be.
fn create_writers(out_dir: &Path, port_names: &[String]) -> Result<Vec<Writer>, ReplayError> {
    std::fs::create_dir_all(out_dir).map_err(|error| ReplayError::Io {
        path: out_dir.to_path_buf(),
        error,
    })?;
    port_names
        .iter()
        .map(|name| {
            let path = out_dir.join(format!("{name}.pcap"));
            PcapWriter::create(&path).map_err(|error| ReplayError::Capture { path, error })
        })
        .collect()
}

/// Writes the fragments of `frame` for `mtu` (the pipeline's `Verdict::Fragment`) through
/// `write`, each built in `buf`; returns how many.
fn write_fragments(
    frame: &[u8],
    mtu: u16,
    buf: &mut [u8],
    write: &mut dyn FnMut(&[u8]) -> Result<(), ReplayError>,
) -> Result<u64, ReplayError> {
    let Ok(plan) = Fragments::plan(frame, mtu) else {
        return Ok(0);
    };
    let mut sent = 0;
    for i in 0..plan.count() {
        if let Some(len) = plan.write(frame, i, buf) {
            write(&buf[..len])?;
            sent += 1;
        }
    }
    Ok(sent)
}

fn seconds(ts_ns: u64) -> u32 {
    u32::try_from(ts_ns / 1_000_000_000).unwrap_or(u32::MAX)
}

fn report(
    pipeline: &Pipeline,
    snap: &Snapshot,
    ports: BTreeMap<String, PortReport>,
    with_affinity: bool,
) -> Report {
    let counters = pipeline.counters();
    let mut clients: Vec<Vec<u64>> = snap
        .services
        .iter()
        .map(|s| vec![0; s.spec.gateways.len()])
        .collect();
    let mut affinity = Vec::new();
    for (k, v) in pipeline.affinity().iter() {
        let Some(svc) = snap.services.get(usize::from(k.service_index())) else {
            continue;
        };
        if let Some(c) = clients
            .get_mut(usize::from(k.service_index()))
            .and_then(|c| c.get_mut(usize::from(v.gateway)))
        {
            *c += 1;
        }
        if with_affinity {
            affinity.push(AffinityReport {
                client: k.client_ip(),
                service: svc.spec.name.clone(),
                gateway: svc
                    .spec
                    .gateways
                    .get(usize::from(v.gateway))
                    .map_or_else(|| v.gateway.to_string(), |g| g.name.clone()),
                confirmed: v.confirmed,
                last_seen: v.last_seen,
            });
        }
    }
    affinity.sort_by(|a, b| (a.client, &a.service).cmp(&(b.client, &b.service)));
    let mut gateways = Vec::new();
    for (s, svc) in snap.services.iter().enumerate() {
        for (g, gw) in svc.spec.gateways.iter().enumerate() {
            gateways.push(GatewayReport {
                service: svc.spec.name.clone(),
                gateway: gw.name.clone(),
                counters: counters
                    .gateways
                    .get(s)
                    .and_then(|v| v.get(g))
                    .copied()
                    .unwrap_or_default(),
                clients: clients[s][g],
            });
        }
    }
    Report {
        ports,
        affinity_entries: pipeline.affinity().len(),
        sni_top: pipeline.sni_stats().top(),
        counters,
        gateways,
        affinity: with_affinity.then_some(affinity),
    }
}

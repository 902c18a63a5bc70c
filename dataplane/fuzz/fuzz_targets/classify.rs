//! Derives an `L4View` from the input and classifies it. Layout: byte 0 picks the protocol,
//! byte 1 the server port, byte 2 flags (bit 0: non-first fragment; bit 1: all protocols on one
//! port; bit 2: the datagram is longer than the payload, as for a first fragment), bytes 3..5 the
//! extra datagram length; the rest is the payload.
#![no_main]
use dataplane::classify::{classify, Class, Detail, L4View, PortPlan, SniStats};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [proto, port, flags, extra_hi, extra_lo, ref payload @ ..] = *data else {
        return;
    };
    let protocol = match proto % 4 {
        0 => 6,
        1 => 17,
        2 => 50,
        _ => proto,
    };
    let server_port = match port % 6 {
        0 => 500,
        1 => 4500,
        2 => 443,
        3 => 0,
        4 => 8443,
        _ => u16::from(port),
    };
    let extra = if flags & 4 != 0 {
        usize::from(u16::from_be_bytes([extra_hi, extra_lo]))
    } else {
        0
    };
    let ports = if flags & 2 != 0 {
        PortPlan {
            ike: server_port,
            natt: server_port,
            dtls: server_port,
            tls: server_port,
        }
    } else {
        PortPlan::default()
    };
    let view = L4View {
        protocol,
        server_port,
        payload,
        datagram_len: payload.len() + extra,
        non_first_fragment: flags & 1 != 0,
    };
    let c = classify(&view, &ports);
    if view.non_first_fragment {
        assert_eq!(c.class, Class::Fragment);
    }
    assert!(c.class.index() < Class::COUNT);
    let consistent = match c.detail {
        Detail::None => matches!(
            c.class,
            Class::NattKeepalive | Class::Fragment | Class::Other
        ),
        Detail::Ike { major_version, .. } => {
            c.class == Class::Ike && matches!(major_version, 1 | 2)
        }
        Detail::Esp { .. } => matches!(c.class, Class::Esp | Class::EspInUdp),
        Detail::Dtls { .. } => c.class == Class::Dtls,
        Detail::Tls { sni, .. } => {
            if let Some(sni) = sni {
                let p = payload.as_ptr_range();
                let s = sni.as_ptr_range();
                assert!(p.start <= s.start && s.end <= p.end);
                let mut stats = SniStats::new(2);
                stats.record(sni);
                assert_eq!(stats.recorded() + stats.invalid(), 1);
            }
            c.class == Class::Tls
        }
    };
    assert!(consistent, "{c:?}");
});

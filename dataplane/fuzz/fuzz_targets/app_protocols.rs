//! Feeds arbitrary bytes to the application-protocol views: IKE (header, payload chain,
//! notify), redirect mode's IKE_SA_INIT reading and answer, TLS and DTLS records and their
//! ClientHello parsers. Besides "never panics", it checks
//! that every slice handed out lies inside the input and that the payload walk is bounded.
#![no_main]
use dataplane::wire::{dtls, ike, tls};
use libfuzzer_sys::fuzz_target;

/// Whether `inner` lies within `outer` (the parsers are zero-copy).
fn within(outer: &[u8], inner: &[u8]) -> bool {
    let o = outer.as_ptr_range();
    let i = inner.as_ptr_range();
    inner.is_empty() || (o.start <= i.start && i.end <= o.end)
}

fn ike(data: &[u8], datagram_len: usize) {
    let Ok(h) = ike::IkeHeader::new_checked(data, datagram_len) else {
        return;
    };
    assert!(matches!(h.major_version(), 1 | 2));
    assert_eq!(h.length() as usize, datagram_len);
    let _ = (
        h.initiator_spi(),
        h.responder_spi(),
        h.flags(),
        h.message_id(),
    );
    let _ = (
        h.is_initiator(),
        h.is_response(),
        h.minor_version(),
        h.next_payload(),
    );
    assert!(within(data, h.payload()));
    let mut n = 0;
    for p in h.payloads() {
        n += 1;
        let Ok(p) = p else { continue };
        assert!(within(data, p.body));
        if let Ok(notify) = p.notify() {
            assert!(within(data, notify.spi()) && within(data, notify.data()));
            let _ = (
                notify.protocol_id(),
                notify.notify_type(),
                notify.is_error(),
            );
        }
    }
    assert!(n <= ike::MAX_PAYLOADS);
    let _ = h.find_notify(ike::notify_type::REDIRECT);
}

/// Redirect mode's reading of an IKE_SA_INIT, and its answer: never longer than the request,
/// and what it echoes is the request's nonce.
fn redirect(data: &[u8]) {
    use dataplane::redirect::{inspect, write_response, Inspection};
    let Inspection::Redirect(r) = inspect(data) else {
        return;
    };
    let nonce = &data[usize::from(r.nonce_at)..][..usize::from(r.nonce_len)];
    for gw in [
        std::net::IpAddr::from([198, 19, 0, 11]),
        std::net::IpAddr::from([0x2001, 2, 0, 2, 0, 0, 0, 0x11u16]),
    ] {
        let mut buf = data.to_vec();
        if let Some(n) = write_response(&mut buf, &r, gw) {
            assert!(n <= data.len());
            assert!(buf[..n].ends_with(nonce));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    redirect(data);
    // IKE with the datagram length of a whole datagram, and with the one the header claims, so
    // the header validates whatever the buffer length (the first-fragment case).
    ike(data, data.len());
    if let Some(len) = data.get(24..28) {
        let claimed = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        ike(data, claimed as usize);
    }
    if let Some(rest) = data.strip_prefix(&ike::NON_ESP_MARKER) {
        ike(rest, rest.len());
    }

    if let Ok(r) = tls::TlsRecord::new_checked(data) {
        assert!(r.fragment().len() <= usize::from(r.length()));
        assert!(within(data, r.fragment()));
        let _ = (r.content_type(), r.version(), r.is_complete());
    }
    if let Some(ch) = tls::parse_client_hello(data) {
        if let Some(sni) = ch.sni {
            assert!(!sni.is_empty() && within(data, sni));
        }
    }

    if let Ok(r) = dtls::DtlsRecord::new_checked(data) {
        assert!(r.fragment().len() <= usize::from(r.length()));
        assert!(within(data, r.fragment()));
        assert!(r.sequence_number() < 1 << 48);
        let _ = (r.content_type(), r.version(), r.epoch(), r.is_complete());
    }
    if let Some(ch) = dtls::parse_client_hello(data) {
        if let Some(sni) = ch.sni {
            assert!(!sni.is_empty() && within(data, sni));
        }
    }
});

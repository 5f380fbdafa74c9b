//! A tiny read-only DER walk over X.509 certificates.
//!
//! We only need the validity window, the subject common name and the public
//! key: pulling in a full X.509 parser (x509-parser, its nom stack) for three
//! fields would more than double this crate's dependency tree.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Errors reading a DER certificate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not the DER structure we expected at this point.
    #[error("malformed certificate DER: {0}")]
    Malformed(&'static str),
    /// A UTCTime / GeneralizedTime we cannot interpret.
    #[error("unsupported certificate time {0:?}")]
    Time(String),
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_UTF8: u8 = 0x0c;
const TAG_PRINTABLE: u8 = 0x13;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_EXPLICIT_0: u8 = 0xa0;
/// OID 2.5.4.3 (id-at-commonName), DER-encoded body.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The fields of a certificate this crate cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The subject's commonName, when present as UTF8String or PrintableString.
    pub subject_cn: Option<String>,
    /// The subject Name, as the full DER TLV (compared byte-for-byte by verifiers).
    pub subject_der: Vec<u8>,
    /// The subjectPublicKey bits (for EC keys: the uncompressed point).
    pub public_key: Vec<u8>,
    /// The serialNumber INTEGER's content bytes (tells renewed certificates apart).
    pub serial: Vec<u8>,
}

/// One tag-length-value element.
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
    /// The whole element including tag and length bytes.
    raw: &'a [u8],
}

/// Read one element from the front of `input`; return it and the rest.
fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input
        .split_first()
        .ok_or(Error::Malformed("truncated tag"))?;
    if tag & 0x1f == 0x1f {
        return Err(Error::Malformed(
            "multi-byte tags are not used in certificates",
        ));
    }
    let (&first, rest) = rest
        .split_first()
        .ok_or(Error::Malformed("truncated length"))?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(Error::Malformed("bad length encoding"));
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(Error::Malformed("length runs past the end"));
    }
    let header = input.len() - rest.len();
    let tlv = Tlv {
        tag,
        body: &rest[..len],
        raw: &input[..header + len],
    };
    Ok((tlv, &rest[len..]))
}

/// Read an element and require its tag.
fn expect<'a>(input: &'a [u8], tag: u8, what: &'static str) -> Result<(Tlv<'a>, &'a [u8])> {
    let (tlv, rest) = read_tlv(input)?;
    if tlv.tag != tag {
        return Err(Error::Malformed(what));
    }
    Ok((tlv, rest))
}

/// Parse the fields we need out of a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo> {
    let (cert, _) = expect(der, TAG_SEQUENCE, "certificate is not a SEQUENCE")?;
    let (tbs, _) = expect(cert.body, TAG_SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
    let mut rest = tbs.body;
    // version [0] EXPLICIT is optional (absent means v1).
    let (first, after) = read_tlv(rest)?;
    if first.tag == TAG_EXPLICIT_0 {
        rest = after;
    }
    let (serial, rest) = expect(rest, TAG_INTEGER, "serialNumber is not an INTEGER")?;
    let (_sig, rest) = expect(rest, TAG_SEQUENCE, "signature algorithm is not a SEQUENCE")?;
    let (_issuer, rest) = expect(rest, TAG_SEQUENCE, "issuer is not a SEQUENCE")?;
    let (validity, rest) = expect(rest, TAG_SEQUENCE, "validity is not a SEQUENCE")?;
    let (subject, rest) = expect(rest, TAG_SEQUENCE, "subject is not a SEQUENCE")?;
    let (spki, _) = expect(rest, TAG_SEQUENCE, "subjectPublicKeyInfo is not a SEQUENCE")?;

    let (nb, vrest) = read_tlv(validity.body)?;
    let (na, _) = read_tlv(vrest)?;
    let (_alg, krest) = expect(spki.body, TAG_SEQUENCE, "SPKI algorithm is not a SEQUENCE")?;
    let (bits, _) = expect(
        krest,
        TAG_BIT_STRING,
        "subjectPublicKey is not a BIT STRING",
    )?;
    let public_key = bits
        .body
        .split_first()
        .map(|(_unused, key)| key.to_vec())
        .ok_or(Error::Malformed("empty public key"))?;

    Ok(CertInfo {
        not_before: parse_time(&nb)?,
        not_after: parse_time(&na)?,
        subject_cn: common_name(subject.body)?,
        subject_der: subject.raw.to_vec(),
        public_key,
        serial: serial.body.to_vec(),
    })
}

/// Find the first commonName in a Name (SEQUENCE OF SET OF AttributeTypeAndValue).
fn common_name(mut name: &[u8]) -> Result<Option<String>> {
    while !name.is_empty() {
        let (rdn, rest) = expect(name, TAG_SET, "RDN is not a SET")?;
        name = rest;
        let mut atvs = rdn.body;
        while !atvs.is_empty() {
            let (atv, rest) = expect(atvs, TAG_SEQUENCE, "attribute is not a SEQUENCE")?;
            atvs = rest;
            let (oid, vrest) = expect(atv.body, TAG_OID, "attribute type is not an OID")?;
            let (value, _) = read_tlv(vrest)?;
            if oid.body == OID_COMMON_NAME && matches!(value.tag, TAG_UTF8 | TAG_PRINTABLE) {
                return Ok(std::str::from_utf8(value.body).ok().map(str::to_owned));
            }
        }
    }
    Ok(None)
}

/// Encode a Name holding exactly one UTF8String commonName, the way rcgen writes it.
pub fn encode_cn_name(cn: &str) -> Vec<u8> {
    let oid = tlv(TAG_OID, OID_COMMON_NAME);
    let value = tlv(TAG_UTF8, cn.as_bytes());
    let atv = tlv(TAG_SEQUENCE, &[oid, value].concat());
    let rdn = tlv(TAG_SET, &atv);
    tlv(TAG_SEQUENCE, &rdn)
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(body);
    out
}

/// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ` (the only forms RFC 5280 allows).
fn parse_time(t: &Tlv<'_>) -> Result<SystemTime> {
    let text = std::str::from_utf8(t.body).map_err(|_| Error::Malformed("time is not ASCII"))?;
    let bad = || Error::Time(text.to_owned());
    let (year, rest) = match t.tag {
        TAG_UTC_TIME if text.len() == 13 => {
            let yy: i64 = text[..2].parse().map_err(|_| bad())?;
            // RFC 5280 4.1.2.5.1: YY >= 50 means 19YY.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        TAG_GENERALIZED_TIME if text.len() == 15 => {
            (text[..4].parse().map_err(|_| bad())?, &text[4..])
        }
        _ => return Err(bad()),
    };
    if !rest.ends_with('Z') || !rest[..10].bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let field = |i: usize| -> i64 { rest[i..i + 2].parse().unwrap_or(-1) };
    let (month, day, hour, min, sec) = (field(0), field(2), field(4), field(6), field(8));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return Err(bad());
    }
    let secs = session_ssh_contract::civil::days_from_civil(year, month, day) * 86_400
        + hour * 3600
        + min * 60
        + sec;
    let secs = u64::try_from(secs).map_err(|_| bad())?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(tag: u8, s: &str) -> Result<SystemTime> {
        parse_time(&Tlv {
            tag,
            body: s.as_bytes(),
            raw: &[],
        })
    }

    #[test]
    fn utc_and_generalized_time() {
        let t = time(TAG_UTC_TIME, "260101000000Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_767_225_600
        );
        let t = time(TAG_UTC_TIME, "991231235959Z").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 946_684_799);
        let t = time(TAG_GENERALIZED_TIME, "20500101000000Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            2_524_608_000
        );
    }

    #[test]
    fn bad_times_are_errors() {
        for s in [
            "2601010000Z",
            "261301000000Z",
            "26010100000+Z",
            "260101000000+",
        ] {
            assert!(time(TAG_UTC_TIME, s).is_err(), "{s}");
        }
        assert!(time(TAG_UTC_TIME, "20500101000000Z").is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x05, 0x30],
            &[0x30, 0x02, 0x30, 0x00],
            &[0x1f, 0x00],
        ] {
            assert!(cert_info(bytes).is_err());
        }
    }

    #[test]
    fn long_lengths_round_trip() {
        let body = vec![7u8; 300];
        let enc = tlv(TAG_SEQUENCE, &body);
        let (t, rest) = read_tlv(&enc).unwrap();
        assert_eq!(t.body, &body[..]);
        assert!(rest.is_empty());
    }
}

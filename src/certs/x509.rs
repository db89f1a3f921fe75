//! Just enough X.509 reading to know when a certificate expires.
//!
//! Rotation needs one field of certificates Serin made itself: `notAfter`. rcgen writes
//! certificates but does not read them back, and a full X.509 parser for one date would be a
//! large dependency, so this walks the DER structure (RFC 5280 §4.1) down to the validity and
//! reads its end time, UTCTime or GeneralizedTime.

use std::time::SystemTime;

use k8s_openapi::jiff::Timestamp;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a readable X.509 certificate: {0}")]
pub struct InvalidCertificate(&'static str);

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0; // [0] EXPLICIT
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// When the first certificate in `pem` expires.
pub fn not_after(pem: &str) -> Result<SystemTime, InvalidCertificate> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| InvalidCertificate("no PEM certificate"))?;
    not_after_der(&der)
}

fn not_after_der(der: &[u8]) -> Result<SystemTime, InvalidCertificate> {
    let (certificate, _) = expect(der, SEQUENCE, "certificate")?;
    let (tbs, _) = expect(certificate, SEQUENCE, "tbsCertificate")?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.2;
    }
    let (_serial, rest) = expect(rest, INTEGER, "serialNumber")?;
    let (_signature, rest) = expect(rest, SEQUENCE, "signature")?;
    let (_issuer, rest) = expect(rest, SEQUENCE, "issuer")?;
    let (validity, _) = expect(rest, SEQUENCE, "validity")?;
    let (_, _not_before, rest) = element(validity)?;
    let (tag, not_after, _) = element(rest)?;
    time(tag, not_after)
}

/// One DER element: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), InvalidCertificate> {
    const TRUNCATED: InvalidCertificate = InvalidCertificate("truncated DER");
    let (&tag, input) = input.split_first().ok_or(TRUNCATED)?;
    let (&first, input) = input.split_first().ok_or(TRUNCATED)?;
    let (length, input) = if first < 0x80 {
        (usize::from(first), input)
    } else {
        // Long form: the low bits say how many length bytes follow. Four are plenty for
        // anything Serin stores in a Secret.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return Err(InvalidCertificate("unsupported DER length"));
        }
        let length = input[..count]
            .iter()
            .fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (length, &input[count..])
    };
    if input.len() < length {
        return Err(TRUNCATED);
    }
    let (contents, rest) = input.split_at(length);
    Ok((tag, contents, rest))
}

fn expect<'a>(
    input: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), InvalidCertificate> {
    match element(input)? {
        (found, contents, rest) if found == tag => Ok((contents, rest)),
        _ => Err(InvalidCertificate(what)),
    }
}

/// `YYMMDDHHMMSSZ` (UTCTime, years 1950–2049) or `YYYYMMDDHHMMSSZ` (GeneralizedTime), the
/// only forms RFC 5280 allows in certificates.
fn time(tag: u8, contents: &[u8]) -> Result<SystemTime, InvalidCertificate> {
    const BAD: InvalidCertificate = InvalidCertificate("notAfter is not a valid time");
    let text = std::str::from_utf8(contents).map_err(|_| BAD)?;
    let digits = text.strip_suffix('Z').ok_or(BAD)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BAD);
    }
    let full = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let century = if digits[..2] < *"50" { "20" } else { "19" };
            format!("{century}{digits}")
        }
        (GENERALIZED_TIME, 14) => digits.to_owned(),
        _ => return Err(BAD),
    };
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    );
    let timestamp: Timestamp = rfc3339.parse().map_err(|_| BAD)?;
    Ok(SystemTime::from(timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{CertOptions, generate_at};
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn reads_the_expiry_of_a_generated_certificate_to_the_second() {
        let now = at(1_750_000_000);
        let opts = CertOptions {
            validity: Duration::from_secs(90),
            ..CertOptions::default()
        };
        let certs = generate_at(&opts, now).expect("generate");
        assert_eq!(not_after(&certs.cert_pem), Ok(at(1_750_000_090)));
        assert_eq!(not_after(&certs.ca_pem), Ok(at(1_750_000_090)));
    }

    #[test]
    fn reads_generalized_time_after_2049() {
        // 2100-01-01T00:00:00Z: past 2049, so written as GeneralizedTime.
        let now = at(4_102_444_800 - 3600);
        let opts = CertOptions {
            validity: Duration::from_secs(3600),
            ..CertOptions::default()
        };
        let certs = generate_at(&opts, now).expect("generate");
        assert_eq!(not_after(&certs.cert_pem), Ok(at(4_102_444_800)));
    }

    #[test]
    fn utc_time_years_before_50_are_in_this_century() {
        assert_eq!(time(UTC_TIME, b"491231235959Z"), Ok(at(2_524_607_999)));
        assert_eq!(time(UTC_TIME, b"700101000000Z"), Ok(at(0)));
        assert!(time(UTC_TIME, b"7001010000Z").is_err());
        assert!(time(GENERALIZED_TIME, b"700101000000Z").is_err());
    }

    #[test]
    fn refuses_what_is_not_a_certificate() {
        assert!(not_after("not PEM").is_err());
        assert_eq!(
            not_after_der(&[0x30, 0x05, 0x02]),
            Err(InvalidCertificate("truncated DER"))
        );
        assert_eq!(
            not_after_der(&[0x30, 0x02, 0x02, 0x00]),
            Err(InvalidCertificate("tbsCertificate"))
        );
    }
}

//! A test CA made with rcgen: certificates for accounts, TLS servers and
//! TLS clients, and signed CRLs.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

pub struct TestCa {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub pem: String,
}

/// A leaf certificate and its key, both PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(30);
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { params, key, pem }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(30);
        let pem = params.signed_by(&key, &self.issuer()).unwrap().pem();
        TestCa { params, key, pem }
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    /// An S/MIME-style identity certificate for `email`.
    pub fn identity(
        &self,
        email: &str,
        serial: u64,
        crl_url: Option<&str>,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, email);
        p.subject_alt_names = vec![SanType::Rfc822Name(email.try_into().unwrap())];
        p.serial_number = Some(SerialNumber::from(serial));
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
        p.not_before = not_before;
        p.not_after = not_after;
        p.use_authority_key_identifier_extension = true;
        if let Some(u) = crl_url {
            p.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![u.to_string()],
            }];
        }
        self.sign(p, key)
    }

    /// A currently valid identity certificate.
    pub fn valid_identity(&self, email: &str, serial: u64, crl_url: &str) -> Leaf {
        let now = OffsetDateTime::now_utc();
        self.identity(
            email,
            serial,
            Some(crl_url),
            now - Duration::hours(1),
            now + Duration::days(10),
        )
    }

    /// A TLS server certificate for 127.0.0.1 and localhost.
    pub fn server(&self) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(p, key)
    }

    /// A TLS client certificate naming `email` (rfc822Name SAN, clientAuth).
    pub fn client(&self, email: &str) -> Leaf {
        self.client_params(email, None)
    }

    /// [`TestCa::client`] with a chosen serial number (to revoke it).
    pub fn client_with_serial(&self, email: &str, serial: u64) -> Leaf {
        self.client_params(email, Some(serial))
    }

    fn client_params(&self, email: &str, serial: Option<u64>) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.serial_number = serial.map(SerialNumber::from);
        p.distinguished_name.push(DnType::CommonName, email);
        p.subject_alt_names = vec![SanType::Rfc822Name(email.try_into().unwrap())];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(p, key)
    }

    fn sign(&self, p: CertificateParams, key: KeyPair) -> Leaf {
        let cert = p.signed_by(&key, &self.issuer()).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A CRL (DER) listing `revoked` serials.
    pub fn crl(&self, revoked: &[u64], number: u64) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        self.crl_at(
            revoked,
            number,
            now - Duration::minutes(1),
            now + Duration::hours(24),
        )
    }

    /// A CRL with explicit thisUpdate and nextUpdate.
    pub fn crl_at(
        &self,
        revoked: &[u64],
        number: u64,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer()).unwrap().der().to_vec()
    }
}

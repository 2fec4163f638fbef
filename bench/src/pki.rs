//! Throw-away certificates for the benchmark: a server certificate for
//! 127.0.0.1 and one TLS client certificate per account (rfc822Name SAN,
//! clientAuth), so codes can be issued without an Argon2 run per request;
//! and S/MIME identity certificates with an empty CRL for the identity
//! uploads of the identity-log benchmark.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// A CA that signs the benchmark's certificates.
pub struct BenchCa {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate, PEM.
    pub pem: String,
}

/// A certificate and its PKCS#8 key, both PEM.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl BenchCa {
    pub fn new(name: &str) -> anyhow::Result<BenchCa> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key)?.pem();
        Ok(BenchCa { params, key, pem })
    }

    fn sign(&self, params: CertificateParams) -> anyhow::Result<Pair> {
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A TLS server certificate for 127.0.0.1.
    pub fn server(&self) -> anyhow::Result<Pair> {
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(p)
    }

    /// A TLS client certificate naming `email`.
    pub fn client(&self, email: &str) -> anyhow::Result<Pair> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, email);
        p.subject_alt_names = vec![SanType::Rfc822Name(email.try_into()?)];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(p)
    }

    /// A currently valid S/MIME identity certificate naming `email`
    /// (emailProtection, its CRL at `crl_url`), as `PUT /v1/identity`
    /// accepts; a fresh key, so a fresh serial and key ID.
    pub fn identity(&self, email: &str, crl_url: &str) -> anyhow::Result<Pair> {
        let now = OffsetDateTime::now_utc();
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, email);
        p.subject_alt_names = vec![SanType::Rfc822Name(email.try_into()?)];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
        p.not_before = now - Duration::hours(1);
        p.not_after = now + Duration::days(30);
        p.use_authority_key_identifier_extension = true;
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![crl_url.to_string()],
        }];
        self.sign(p)
    }

    /// An empty CRL (DER) of this CA, valid for a day.
    pub fn empty_crl(&self) -> anyhow::Result<Vec<u8>> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(1),
            next_update: now + Duration::hours(24),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.params, &self.key);
        Ok(params.signed_by(&issuer)?.der().to_vec())
    }

    /// One HTTPS client per account, each logging in with that account's
    /// TLS client certificate and trusting only `server_root`.
    pub fn login_clients(
        &self,
        server_root: &reqwest::Certificate,
        accounts: &[String],
    ) -> anyhow::Result<Vec<reqwest::Client>> {
        accounts
            .iter()
            .map(|a| {
                let pair = self.client(a)?;
                let id = reqwest::Identity::from_pem(
                    format!("{}{}", pair.cert_pem, pair.key_pem).as_bytes(),
                )?;
                Ok(crate::server::client()
                    .tls_certs_only([server_root.clone()])
                    .identity(id)
                    .build()?)
            })
            .collect()
    }
}

/// The TLS side of a benchmark MTA: a server CA, a client CA (whose
/// certificates log accounts in), the server's certificate and key
/// written into a directory, and the `serve` arguments that use them.
pub struct MtaTls {
    pub server_ca: BenchCa,
    pub client_ca: BenchCa,
    /// `--tls-cert F --tls-key F --client-ca F`.
    pub args: Vec<String>,
}

impl MtaTls {
    /// Makes the CAs and the server certificate, writing the files into `dir`.
    pub fn new(dir: &std::path::Path) -> anyhow::Result<MtaTls> {
        let server_ca = BenchCa::new("bench server CA")?;
        let client_ca = BenchCa::new("bench client CA")?;
        let server = server_ca.server()?;
        let file = |name: &str, text: &str| -> anyhow::Result<String> {
            let p = dir.join(name);
            std::fs::write(&p, text)?;
            Ok(p.display().to_string())
        };
        let args = vec![
            "--tls-cert".to_string(),
            file("server.pem", &server.cert_pem)?,
            "--tls-key".to_string(),
            file("server.key", &server.key_pem)?,
            "--client-ca".to_string(),
            file("client-ca.pem", &client_ca.pem)?,
        ];
        Ok(MtaTls {
            server_ca,
            client_ca,
            args,
        })
    }
}

//! Loading TLS material: key formats, encrypted and mismatched keys. Key
//! conversions use the openssl command, as operators would.

use std::path::Path;
use std::process::Command;

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
use valora_mesh::identity::Identity;
use valora_mesh::pki::{self, LeafOptions};
use valora_mesh::tls::{Material, MaterialError, TlsFiles, provider};

fn openssl(args: &[&str]) {
    let status = Command::new("openssl").args(args).status().expect("openssl is installed");
    assert!(status.success(), "openssl {args:?} failed");
}

/// Returns the label of the first PEM block in `path`, such as
/// `EC PRIVATE KEY`, which names the encoding of a key file.
fn pem_label(path: impl AsRef<Path>) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text.lines().find(|l| l.starts_with("-----BEGIN ")).expect("a PEM block");
    line.trim_start_matches("-----BEGIN ").trim_end_matches('-').to_owned()
}

fn load(dir: &Path, identity: &Identity) -> Result<Material, MaterialError> {
    Material::load(&TlsFiles::in_dir(dir, identity), identity, &provider())
}

#[test]
fn pkcs8_and_sec1_keys_load() {
    let dir = tempfile::tempdir().unwrap();
    pki::write_dev_pki(dir.path(), false).unwrap();
    let identity = Identity::marketplace();
    let key = pki::key_path(dir.path(), &identity);
    assert_eq!(pem_label(&key), "PRIVATE KEY");
    load(dir.path(), &identity).expect("PKCS#8 key");

    let path = key.display().to_string();
    let converted = format!("{path}.sec1");
    openssl(&["pkey", "-in", &path, "-traditional", "-out", &converted]);
    std::fs::rename(&converted, &key).unwrap();
    assert_eq!(pem_label(&key), "EC PRIVATE KEY");
    load(dir.path(), &identity).expect("SEC1 key");
}

#[test]
fn pkcs1_rsa_key_loads() {
    let dir = tempfile::tempdir().unwrap();
    pki::write_dev_pki(dir.path(), false).unwrap();
    let identity = Identity::marketplace();
    let key_path = pki::key_path(dir.path(), &identity);
    let pkcs1 = key_path.display().to_string();
    let pkcs8 = dir.path().join("rsa8.pem").display().to_string();
    openssl(&["genrsa", "-traditional", "-out", &pkcs1, "2048"]);
    openssl(&["pkey", "-in", &pkcs1, "-out", &pkcs8]);
    assert_eq!(pem_label(&key_path), "RSA PRIVATE KEY");

    // Sign a certificate for the RSA key with the development CA.
    let ca_pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(dir.path().join("ca.key")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let rsa = KeyPair::from_pem(&std::fs::read_to_string(&pkcs8).unwrap()).unwrap();
    let mut params = CertificateParams::new(vec![identity.dns_name()]).unwrap();
    params.subject_alt_names.push(SanType::URI(identity.spiffe_id().try_into().unwrap()));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&rsa, &issuer).unwrap();
    std::fs::write(pki::cert_path(dir.path(), &identity), format!("{}{ca_pem}", cert.pem())).unwrap();

    load(dir.path(), &identity).expect("PKCS#1 RSA key");
}

#[test]
fn encrypted_key_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    pki::write_dev_pki(dir.path(), false).unwrap();
    let identity = Identity::marketplace();
    let key = pki::key_path(dir.path(), &identity).display().to_string();
    let encrypted = format!("{key}.enc");
    openssl(&["pkcs8", "-topk8", "-in", &key, "-out", &encrypted, "-v2", "aes-256-cbc", "-passout", "pass:secret"]);
    std::fs::rename(&encrypted, &key).unwrap();
    let error = load(dir.path(), &identity).unwrap_err().to_string();
    assert!(error.contains(&key), "{error}");
    assert!(error.contains("encrypted"), "{error}");
}

#[test]
fn mismatched_key_is_refused_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    pki::write_dev_pki(dir.path(), false).unwrap();
    let identity = Identity::marketplace();
    let key = pki::key_path(dir.path(), &identity);
    std::fs::copy(pki::key_path(dir.path(), &Identity::edge()), &key).unwrap();
    let error = load(dir.path(), &identity).unwrap_err().to_string();
    assert!(error.contains(&key.display().to_string()), "{error}");
    assert!(error.contains("marketplace.pem"), "{error}");
}

#[test]
fn leaf_for_another_identity_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    pki::write_dev_pki(dir.path(), false).unwrap();
    let error = load(dir.path(), &Identity::marketplace()).map(drop);
    assert!(error.is_ok());
    std::fs::copy(pki::cert_path(dir.path(), &Identity::edge()), pki::cert_path(dir.path(), &Identity::marketplace())).unwrap();
    std::fs::copy(pki::key_path(dir.path(), &Identity::edge()), pki::key_path(dir.path(), &Identity::marketplace())).unwrap();
    let error = load(dir.path(), &Identity::marketplace()).unwrap_err();
    assert!(matches!(error, MaterialError::WrongIdentity { .. }), "{error}");
    assert!(error.to_string().contains("spiffe://valora.internal/edge"), "{error}");
}

#[test]
fn leaf_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    pki::write_dev_pki(dir.path(), false).unwrap();
    let rogue = pki::MeshCa::generate("rogue").unwrap();
    let leaf = rogue.issue(&Identity::marketplace(), &LeafOptions::default()).unwrap();
    std::fs::write(pki::cert_path(dir.path(), &Identity::marketplace()), leaf.chain_pem).unwrap();
    std::fs::write(pki::key_path(dir.path(), &Identity::marketplace()), leaf.key_pem).unwrap();
    let error = load(dir.path(), &Identity::marketplace()).unwrap_err();
    assert!(matches!(error, MaterialError::Untrusted { .. }), "{error}");
}

#[test]
fn reload_keeps_old_material_on_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    pki::write_dev_pki(dir.path(), false).unwrap();
    let identity = Identity::marketplace();
    let tls = valora_mesh::tls::MeshTls::load(TlsFiles::in_dir(dir.path(), &identity), &identity).unwrap();
    let before = tls.current().leaf().serial.clone();
    std::fs::write(pki::cert_path(dir.path(), &identity), "not a certificate").unwrap();
    assert!(tls.reload().is_err());
    assert_eq!(tls.current().leaf().serial, before);

    pki::write_dev_pki(dir.path(), true).unwrap();
    let fresh = tls.reload().unwrap().expect("new material");
    assert_ne!(fresh.serial, before);
    assert_eq!(tls.current().leaf().serial, fresh.serial);
}

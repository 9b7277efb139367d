//! HTTPS with rustls: a daemon configured with `[server.tls]` serves only TLS, and `agentctl
//! --ca-cert` talks to it.

use agentd_tests::{agentctl, write_config, Daemon};
use std::process::Command;

#[tokio::test]
async fn the_daemon_serves_https_and_agentctl_trusts_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    // A private CA and a server certificate it signed (webpki refuses a CA as the end entity).
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (ca_key, ca_cert, key, csr, cert, ext) = (
        path("ca.key"),
        path("ca.pem"),
        path("key.pem"),
        path("server.csr"),
        path("cert.pem"),
        path("ext.cnf"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=agentd test CA",
                "-keyout",
                &ca_key,
                "-out",
                &ca_cert,
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &["-subj", "/CN=localhost", "-keyout", &key, "-out", &csr],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_cert,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    let config = write_config(
        dir.path(),
        &format!("[server.tls]\ncert_path = {cert:?}\nkey_path = {key:?}\n"),
    );
    let daemon = Daemon::start(&dir.path().join("data"), Some(&config));
    assert!(daemon.url.starts_with("https://"), "{}", daemon.url);

    let cert_arg = ca_cert.as_str();
    let output = agentctl(
        &daemon.url,
        &[
            "--ca-cert",
            cert_arg,
            "submit",
            "--queue",
            "q",
            "--kind",
            "k",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "job_1");

    // Without trusting the CA the connection is refused; plain HTTP to the TLS port fails too.
    let output = agentctl(&daemon.url, &["jobs", "show", "job_1"]);
    assert!(!output.status.success());
    let plain = daemon.url.replace("https://", "http://");
    let output = agentctl(&plain, &["jobs", "show", "job_1"]);
    assert!(!output.status.success());
    let output = agentctl(
        &daemon.url,
        &["--ca-cert", cert_arg, "--json", "jobs", "show", "job_1"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let job: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(job["state"], "queued");
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

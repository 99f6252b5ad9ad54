//! The shipped deployment files, as the security review read them: nothing published beyond
//! loopback, no secret as a plain environment value, a health check, the schedule in use.

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn compose_publishes_only_on_loopback_and_passes_secrets_as_files() {
    let compose = read("docker-compose.yml");
    let published: Vec<&str> = compose
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ports:"))
        .collect();
    assert!(!published.is_empty());
    for line in &published {
        let inner = line.trim_start_matches("ports:").trim();
        for port in inner.trim_matches(['[', ']']).split(',') {
            assert!(
                port.trim().trim_matches('"').starts_with("127.0.0.1:"),
                "published beyond loopback: {line}"
            );
        }
    }
    for plain in ["P100_API_KEY:", "POSTGRES_PASSWORD:", "P100_WEBHOOK_TOKEN:"] {
        assert!(
            !compose.contains(plain),
            "{plain} is passed as a plain environment value"
        );
    }
    assert!(compose.contains("P100_API_KEY_FILE: /run/secrets/"));
    assert!(compose.contains("POSTGRES_PASSWORD_FILE: /run/secrets/"));
    let postgres = compose
        .split("\n  sandbox:")
        .next()
        .unwrap()
        .split("\n  postgres:")
        .nth(1)
        .unwrap();
    assert!(!postgres.contains("ports:"), "Postgres is published");
    let daemon = compose
        .split("\nx-daemon: &daemon")
        .nth(1)
        .unwrap()
        .split("\nservices:")
        .next()
        .unwrap();
    assert!(daemon.contains("daemon --schedule /etc/p100-recon/schedule.toml"));
    // Three replicas of that one definition.
    for replica in ["\n  daemon:", "\n  daemon-2:", "\n  daemon-3:"] {
        let service = compose.split(replica).nth(1).unwrap();
        assert!(service.trim_start().starts_with("<<: *daemon"), "{replica}");
    }
}

#[test]
fn the_image_checks_its_health_and_runs_with_the_schedule_it_ships() {
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("HEALTHCHECK"));
    assert!(dockerfile.contains("/readyz"));
    assert!(dockerfile.contains("COPY jobs/schedule.toml /etc/p100-recon/schedule.toml"));
    assert!(
        dockerfile.contains(r#"CMD ["daemon", "--schedule", "/etc/p100-recon/schedule.toml"]"#)
    );
    assert!(
        !dockerfile.contains("P100_API_KEY="),
        "a key baked into the image"
    );
}

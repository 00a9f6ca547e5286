//! The layering order: file, then `OPRELAY_…` environment on top. One test in its own binary,
//! because the environment is process-wide.

use std::time::Duration;

use oprelay_service::config;

#[test]
fn environment_overrides_the_file_and_other_variables_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oprelay.toml");
    std::fs::write(
        &path,
        "[nats]\nurl = \"nats://from-file:4222\"\n[telemetry]\nlog_level = \"debug\"\n",
    )
    .unwrap();
    // SAFETY-free: this test binary has a single test, so nothing reads the environment
    // concurrently.
    unsafe {
        std::env::set_var("OPRELAY_NATS__URL", "nats://from-env:4222");
        std::env::set_var("OPRELAY_HEALTHWATCH__DROPOFF_AFTER", "2h");
        // A token variable named with the same prefix is not config.
        std::env::set_var("OPRELAY_TOKEN_ACME", "eyJ...");
        // Nor is the CLI's own variable, whose name starts like the `nats` section.
        std::env::set_var("OPRELAY_NATS_URL", "nats://for-the-cli:4222");
        std::env::set_var("OPRELAY_FETCHERS", "unrelated");
        std::env::set_var("OPRELAY_CONFIG", path.display().to_string());
    }
    let c = config::load(Some(&path)).expect("loads");
    assert_eq!(c.nats.url, "nats://from-env:4222", "env wins over file");
    assert_eq!(c.telemetry.log_level, "debug", "file wins over defaults");
    assert_eq!(c.healthwatch.dropoff_after.0, Duration::from_secs(7200));

    unsafe { std::env::set_var("OPRELAY_NATS__URLL", "x") };
    let err = config::load(Some(&path)).expect_err("unknown key from the environment");
    assert!(err.to_string().contains("urll"), "{err}");
    unsafe { std::env::remove_var("OPRELAY_NATS__URLL") };

    let err = config::load(Some(&dir.path().join("missing.toml"))).unwrap_err();
    assert_eq!(err.key, "--config");
}

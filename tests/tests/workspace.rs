//! Properties of the workspace as a whole.

use std::process::Command;

/// One crypto provider for rustls across the workspace: aws-lc-rs, never ring beside it. (The
/// lock file lists optional dependencies no feature enables, so the resolved tree is what counts.)
#[test]
fn the_build_uses_aws_lc_rs_and_not_ring() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--workspace",
            "--offline",
            "--edges",
            "normal,build,dev",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).unwrap();
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split(' ').next())
        .collect();
    assert!(names.contains(&"aws-lc-rs"), "aws-lc-rs is the provider");
    assert!(
        !names.contains(&"ring"),
        "ring crept into the build: cargo tree -i ring"
    );
}

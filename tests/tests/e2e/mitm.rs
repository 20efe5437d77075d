//! A TLS server with another UMS ID on the address the stick names: the agents refuse it and it
//! never sees a key.

use crate::util::{Ums, enroll_all};

#[test]
fn a_machine_in_the_middle_with_another_ums_id_never_sees_a_key() {
    let ums = Ums::start();
    let imposter = Ums::start();
    let root = tempfile::tempdir().unwrap();
    let stick = root.path().join("STICK");
    // The stick is the real server's export (its keys, its UMS ID), but it names the address
    // the imposter answers on.
    ums.one_time_stick(5, &stick, Some(&imposter.addr().to_string()));
    let path = stick.join("icg.xml");
    let outputs = enroll_all(
        &ums.programs,
        root.path(),
        5,
        5,
        &[path.to_str().unwrap(), "--tries", "2"],
    );
    let keys = ums.keys();
    for (n, output) in outputs.iter().enumerate() {
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(4), "device {n}: {said}");
        assert!(said.contains("not the pinned UMS ID"), "{said}");
    }
    assert!(
        imposter.enroll_audit().is_empty(),
        "the imposter received an enrollment"
    );
    assert!(ums.enroll_audit().is_empty());
    assert!(keys.iter().all(|key| key.usage_count == 0));
    assert!(imposter.devices().is_empty());
}

//! Distributed UMS, in process: several servers on one PostgreSQL database (a throwaway cluster)
//! with the cluster secret: the first server's UMS ID becomes the Main one, the others adopt it,
//! servers without the right secret are not in sync and refuse enrollments, logins and admin
//! writes (a token row they would write grants nothing), every key is used once across servers,
//! the status table shows every server, and the database alone reveals no key and no private key.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use ums_stub::accounts::Granter;

use onboard_protocol::admin::{Right, ServerView};
use reqwest::StatusCode;
use ums_stub::store::Actor;
use ums_stub::store::Database;

use crate::pg::PgCluster;
use crate::server::{Device, TestServer, enroll};

async fn server(url: &str, secret: Option<&Path>) -> TestServer {
    let url = url.to_owned();
    let secret = secret.map(Path::to_owned);
    TestServer::start_with(move |settings| {
        settings.database = Database::parse(&url).unwrap();
        settings.cluster_secret = secret;
        settings.rate_limits = crate::server::generous();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_on_one_database_share_the_main_ums_id_and_use_each_key_once() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let url = cluster.database();
    let folder = tempfile::tempdir().unwrap();
    let secret = folder.path().join("cluster.secret");
    let other_secret = folder.path().join("other.secret");
    ums_stub::cluster::ClusterSecret::create(&secret).unwrap();
    ums_stub::cluster::ClusterSecret::create(&other_secret).unwrap();

    // Without a secret, the first server cannot make the Main UMS ID.
    let refused = tokio::spawn({
        let url = url.clone();
        async move {
            let dir = tempfile::tempdir().unwrap();
            let mut settings =
                ums_stub::config::Settings::load(dir.path().join("data"), None).unwrap();
            settings.database = Database::parse(&url).unwrap();
            ums_stub::stub::Stub::open(settings)
                .await
                .map(|_| ())
                .unwrap_err()
                .to_string()
        }
    })
    .await
    .unwrap();
    assert!(refused.contains("cluster-secret create"), "{refused}");

    let a = server(&url, Some(&secret)).await;
    let b = server(&url, Some(&secret)).await;
    let wrong = server(&url, Some(&other_secret)).await;
    let without = server(&url, None).await;
    use ums_stub::cluster::SyncStatus;
    assert_eq!(a.shared.stub.sync, SyncStatus::Main);
    assert_eq!(b.shared.stub.sync, SyncStatus::InSync);
    assert_eq!(wrong.shared.stub.sync, SyncStatus::NotInSync);
    assert_eq!(without.shared.stub.sync, SyncStatus::NotInSync);
    let main = a.shared.stub.ums_id.fingerprint();
    assert_eq!(
        b.shared.stub.ums_id.fingerprint(),
        main,
        "B adopted the Main UMS ID"
    );
    assert_ne!(
        b.shared.stub.local_fingerprint, main,
        "B keeps its Local UMS ID"
    );
    assert_eq!(
        b.ums_id_der, a.ums_id_der,
        "B's TLS chain is anchored in the Main UMS ID"
    );

    // Keys made through A, used through A and B at once: each exactly once.
    let keys = a.shared.stub.keys();
    let ids = keys
        .create_one_time(40, "cluster", Box::new(|_| {}), &Actor::cli())
        .await
        .unwrap();
    let values: Vec<String> = keys
        .reveal(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|view| view.key)
        .collect();
    let values = Arc::new(values);
    let servers = Arc::new([a, b]);
    let mut tasks = Vec::new();
    for device in 0..120usize {
        let (servers, values) = (servers.clone(), values.clone());
        tasks.push(tokio::spawn(async move {
            let server = &servers[device % 2];
            let client = server.client(None);
            let me = Device::numbered(10_000 + device);
            for step in 0..values.len() {
                let key = &values[(device + step) % values.len()];
                let answer = enroll(&client, server, &me, key).await;
                if answer.status == StatusCode::OK {
                    return Some(key.clone());
                }
                assert_eq!(answer.code(), "key_used", "{}", answer.status);
            }
            None
        }));
    }
    let mut used = Vec::new();
    for task in tasks {
        if let Some(key) = task.await.unwrap() {
            used.push(key);
        }
    }
    assert_eq!(used.len(), 40);
    assert_eq!(
        used.iter().collect::<HashSet<_>>().len(),
        40,
        "no key twice"
    );
    let [a, b] = Arc::try_unwrap(servers).ok().unwrap();
    assert_eq!(
        b.devices().await.len(),
        40,
        "every server sees every device"
    );

    // A device enrolled through A renews and reports through B.
    let (_, mass) = a
        .shared
        .stub
        .keys()
        .create_mass(None, "roaming", &Actor::cli())
        .await
        .unwrap();
    let roaming = Device::numbered(777);
    let first = enroll(&a.client(None), &a, &roaming, mass.expose_secret())
        .await
        .certificate
        .expect("enrolled through A");
    let next = Device::new(&roaming.unit_id);
    let renewed = crate::server::read_answer(
        b.client(Some((&first, &roaming.key)))
            .post(b.url(onboard_protocol::routes::EST_SIMPLEREENROLL))
            .body(next.csr_base64.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(renewed.status, StatusCode::OK, "renewed through B");
    let second = renewed.certificate.unwrap();
    let report = b
        .client(Some((&second, &next.key)))
        .put(b.url(onboard_protocol::routes::DEVICE_INVENTORY))
        .header("content-type", onboard_protocol::routes::CONTENT_TYPE_JSON)
        .body(r#"{"host_name":"roaming-pc"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        report.status(),
        StatusCode::NO_CONTENT,
        "reported through B"
    );
    let seen = a
        .shared
        .stub
        .store
        .device(&roaming.unit_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.certificate, second, "A sees the certificate B issued");
    assert!(seen.inventory.unwrap().contains("roaming-pc"));

    // A server not in sync refuses enrollments instead of issuing certificates under its Local
    // UMS ID.
    let client = wrong.client(None);
    let answer = enroll(&client, &wrong, &Device::numbered(1), &values[0]).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.code(), "server_not_in_sync");
    // Nor does it say a key would be accepted, for the same reason.
    let checked = crate::check::check(
        &client,
        &wrong,
        &Device::numbered(1).unit_id,
        &[&values[0]],
        None,
    )
    .await;
    assert_eq!(
        (checked.status, checked.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "server_not_in_sync")
    );
    // Nor does it read or write keys: its vault is not the cluster's.
    let written = wrong
        .shared
        .stub
        .keys()
        .create_one_time(1, "", Box::new(|_| {}), &Actor::cli())
        .await;
    assert!(
        matches!(written, Err(ums_stub::keys::KeyError::NotInSync)),
        "{written:?}"
    );
    assert!(matches!(
        without.shared.stub.keys().reveal(&ids[..1]).await,
        Err(ums_stub::keys::KeyError::NotInSync)
    ));

    // The status table, from any server that may show it.
    let accounts = a.shared.stub.accounts();
    accounts
        .create(
            onboard_protocol::admin::NewAccount {
                name: "root".to_owned(),
                password: "cluster root password".to_owned(),
                rights: vec![Right::ServerAdmin],
            },
            &Granter::cli(),
        )
        .await
        .unwrap();
    let token = accounts
        .create_token(
            onboard_protocol::admin::NewToken {
                account: "root".to_owned(),
                name: String::new(),
                rights: None,
                expires_days: None,
            },
            &Granter::cli(),
        )
        .await
        .unwrap()
        .token;
    let table: Vec<ServerView> = b
        .client(None)
        .get(b.url("/api/v1/servers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let status_of = |server: &TestServer| {
        table
            .iter()
            .find(|row| row.host_name.ends_with(&format!(":{}", server.port)))
            .unwrap_or_else(|| panic!("port {} missing from {table:?}", server.port))
            .clone()
    };
    assert_eq!(table.len(), 4, "{table:?}");
    for (server, status) in [
        (&a, "Main UMS ID"),
        (&b, "In sync"),
        (&wrong, "Not in sync, please restart server"),
        (&without, "Not in sync, please restart server"),
    ] {
        let row = status_of(server);
        assert_eq!(row.server_status, "Running");
        assert_eq!(row.ums_id_status, status);
    }
    assert_eq!(status_of(&a).fingerprint, main);
    assert_eq!(
        status_of(&wrong).fingerprint,
        wrong.shared.stub.local_fingerprint
    );

    // The database alone: no key value, no private key, no password.
    let dump = dump(&url).await;
    let hex = |text: &str| -> String { text.bytes().map(|b| format!("{b:02x}")).collect() };
    for value in values.iter() {
        assert!(!dump.contains(value.as_str()), "a key in the clear");
        assert!(!dump.contains(&hex(value)), "a key in the clear, as bytes");
    }
    assert!(!dump.contains("PRIVATE KEY"), "a private key in the clear");
    assert!(!dump.contains("cluster root password"));
    assert!(
        dump.contains("BEGIN CERTIFICATE"),
        "the dump reads the tables"
    );

    // A server with another cluster's secret mints no token and logs nobody in; a token row it
    // would write (its MAC under its Local UMS ID), put straight into the database, grants nothing
    // on a server in sync.
    let minted = wrong
        .shared
        .stub
        .accounts()
        .create_token(
            onboard_protocol::admin::NewToken {
                account: "root".to_owned(),
                name: String::new(),
                rights: None,
                expires_days: None,
            },
            &Granter::cli(),
        )
        .await;
    assert!(
        matches!(minted, Err(ums_stub::accounts::AccountError::NotInSync)),
        "{minted:?}"
    );
    let login = wrong
        .client(None)
        .post(wrong.url("/api/v1/session"))
        .json(&serde_json::json!({"name": "root", "password": "cluster root password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE);
    let forged = "umst_00000000f00d_a-token-nobody-was-given";
    let mut row = ums_stub::store::TokenRow {
        id: "00000000f00d".to_owned(),
        digest: sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
            forged.as_bytes(),
        ))
        .into(),
        account: "root".to_owned(),
        name: "forged".to_owned(),
        rights: vec![Right::ServerAdmin, Right::KeysReveal],
        created_at: time::OffsetDateTime::now_utc(),
        expires_at: None,
        mac: None,
    };
    row.mac = Some(wrong.shared.stub.rows.token(&row));
    wrong
        .shared
        .stub
        .store
        .create_token(&row, &Actor::cli())
        .await
        .unwrap();
    let refused = a
        .client(None)
        .get(a.url("/api/v1/accounts"))
        .bearer_auth(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "a forged token");

    a.stop().await;
    b.stop().await;
    wrong.stop().await;
    without.stop().await;
}

/// Every row of every table of the database, as text.
async fn dump(url: &str) -> String {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tables = client
        .query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap();
    let mut text = String::new();
    for table in tables {
        let name: String = table.get(0);
        // Each row as JSON; bytea columns come out hex-encoded, text as it is.
        let rows = client
            .query(&format!("SELECT row_to_json(t)::text FROM {name} t"), &[])
            .await
            .unwrap();
        for row in rows {
            text.push_str(row.get::<_, &str>(0));
            text.push('\n');
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_store_copies_into_postgres_and_a_stick_made_before_still_enrolls() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let url = cluster.database();
    let dir = crate::util::DataDir::new();
    let url_for_cli = url.clone();
    let (stick2, secret2) = (
        dir.scratch().join("old-icg.xml"),
        dir.scratch().join("cluster.secret"),
    );
    let (dir, copied, again) = tokio::task::spawn_blocking(move || {
        dir.ok(&["keys", "create", "one-time", "--quantity", "10000"]);
        dir.ok(&[
            "keys",
            "export",
            "--out",
            stick2.to_str().unwrap(),
            "--server",
            "localhost:8443",
        ]);
        dir.ok(&[
            "cluster-secret",
            "create",
            "--out",
            secret2.to_str().unwrap(),
        ]);
        dir.ok(&["admins", "create", "admin", "--rights", "keys:read"]);
        dir.ok(&["tokens", "create", "--admin", "admin", "--name", "copied"]);
        let copy = [
            "--cluster-secret",
            secret2.to_str().unwrap(),
            "database",
            "copy",
            "--to",
            &url_for_cli,
        ];
        let copied = dir.ok(&copy);
        let again = dir.fails(&copy);
        (dir, copied, again)
    })
    .await
    .unwrap();
    assert!(copied.contains("Copied 10000 keys"), "{copied}");
    assert!(again.contains("not empty"), "{again}");

    let data = dir.path();
    let secret = dir.scratch().join("cluster.secret");
    let server = TestServer::start_with({
        let url = url.clone();
        move |settings| {
            settings.data_dir = data;
            settings.database = Database::parse(&url).unwrap();
            settings.cluster_secret = Some(secret);
        }
    })
    .await;
    assert_eq!(server.shared.stub.sync, ums_stub::cluster::SyncStatus::Main);
    assert_eq!(
        server
            .shared
            .stub
            .keys()
            .count(&Default::default())
            .await
            .unwrap(),
        10_000
    );
    let file = onboard_protocol::KeyFile::parse(
        &std::fs::read(dir.scratch().join("old-icg.xml")).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let client = server.client(None);
    let answer = enroll(
        &client,
        &server,
        &Device::numbered(42),
        file.keys[0].key().expose_secret(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.problem);
    // Accounts and their tokens came along.
    assert!(
        server
            .shared
            .stub
            .store
            .account("admin")
            .await
            .unwrap()
            .is_some()
    );
    let tokens = server
        .shared
        .stub
        .store
        .tokens(Some("admin"), &ums_stub::store::PageRequest::all())
        .await
        .unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].name, "copied");
    // New keys are numbered after the copied ones.
    let ids = server
        .shared
        .stub
        .keys()
        .create_one_time(1, "", Box::new(|_| {}), &Actor::cli())
        .await
        .unwrap();
    assert_eq!(ids, [10_001]);
    server.stop().await;
}

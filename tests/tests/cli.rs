//! The two programs as a person runs them: what they print and the exit
//! codes scripts act on (README, "Exit codes"), the same key twice in a
//! file, and the importer's live lines on a terminal and not elsewhere.

use hpn_common::RecordKind;
use hpn_tests::process::{customers_file, importer_program, producer_program, run};
use hpn_tests::{documents, TestEnv};
use std::process::Command;

/// Import what is queued, then the stored customers' names in key order.
async fn import_names(env: &TestEnv) -> Vec<String> {
    let ran = run(env, &importer_program(), &["run", "--json"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    documents(&env.store().await, RecordKind::Customer)
        .await
        .iter()
        .map(|d| d.get_str("name").unwrap().to_string())
        .collect()
}

/// Files published together carry one key in the order given: the later
/// file's record wins, whichever file's thread stamps first; given the
/// other way round, the other wins. Two files of a thousand rows each, so
/// the two threads overlap.
#[tokio::test]
async fn of_files_published_together_the_later_one_given_wins() {
    let env = TestEnv::new("cli_file_order");
    let header = "user_id,name,address,zip_code,phone_number,email\n";
    let file = |name: &str| {
        let path = env.path(&format!("{name}.csv"));
        let rows: String = (0..1000)
            .map(|i| format!("C{i},{name} {i},1 Main St,98101,555-0100,a@example.com\n"))
            .collect();
        std::fs::write(&path, format!("{header}{rows}")).unwrap();
        path
    };
    let (early, late) = (file("Early"), file("Late"));
    let clock = env.path("clock");
    for (files, winner) in [([&early, &late], "Late"), ([&late, &early], "Early")] {
        let mut args = vec!["publish", "--json", "--version-clock", clock.to_str().unwrap()];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        let ran = run(&env, &producer_program(), &args);
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        let names = import_names(&env).await;
        assert_eq!(names.len(), 1000);
        assert!(
            names.iter().all(|n| n.starts_with(winner)),
            "{winner}, the file given last, wins every key: {:?}",
            names
                .iter()
                .filter(|n| !n.starts_with(winner))
                .take(3)
                .collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn a_key_twice_in_a_file_is_reported_with_both_lines_and_the_later_wins() {
    let env = TestEnv::new("cli_duplicates");
    let file = env.path("customers.csv");
    std::fs::write(
        &file,
        "user_id,name,address,zip_code,phone_number,email\n\
         C1,Ann Old,1 Main St,98101,555-0100,ann@example.com\n\
         C2,Bo,2 Oak Ave,98101,555-0101,bo@example.com\n\
         C1,Ann New,1 Main St,98101,555-0100,ann@example.com\n\
         C3,Cy,3 Elm St,98101,555-0102,not-an-email\n",
    )
    .unwrap();
    let clock = env.path("clock");
    let publish = |file: &std::path::Path| {
        run(
            &env,
            &producer_program(),
            &[
                "publish",
                "--json",
                "--version-clock",
                clock.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
        )
    };
    let ran = publish(&file);
    assert_eq!(ran.code, Some(4), "rows rejected: exit code 4\n{}", ran.stderr);
    let expected = format!("{}:4: the same key as line 2 (user_id C1); line 4 wins", file.display());
    assert!(ran.stderr.contains(&expected), "{expected:?} in\n{}", ran.stderr);
    assert!(
        ran.stderr.contains(&format!("{}:5: email", file.display())),
        "{}",
        ran.stderr
    );
    let summary = &ran.json()["files"][0];
    assert_eq!(
        (&summary["published"], &summary["rejected"], &summary["duplicate_keys"]),
        (&3.into(), &1.into(), &1.into())
    );

    assert_eq!(import_names(&env).await, vec!["Ann New", "Bo"], "the later line won");

    // A clean file exits 0; a file refused alone exits 3.
    let clean = env.path("clean.csv");
    std::fs::write(&clean, "product_id,user_id\nP1,C1\n").unwrap();
    assert_eq!(publish(&clean).code, Some(0));
    let empty = env.path("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let ran = publish(&empty);
    assert_eq!(ran.code, Some(3), "{}", ran.stderr);
    assert_eq!(ran.json()["published"], 0);
    env.cleanup().await;
}

#[tokio::test]
async fn the_importer_draws_its_progress_on_a_terminal_and_nowhere_else() {
    let env = TestEnv::new("cli_progress");
    let file = customers_file(&env, 20_000);
    let clock = env.path("clock");
    let publish = || {
        let ran = run(
            &env,
            &producer_program(),
            &[
                "publish",
                "--rows-per-message",
                "1",
                "--version-clock",
                clock.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
        );
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    };

    // Not a terminal: the report on stdout, and no progress on stderr.
    publish();
    let ran = run(&env, &importer_program(), &["run", "--mode", "linear"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("customers"), "the report: {}", ran.stdout);
    assert!(
        !ran.stderr.contains("records written") && !ran.stderr.contains("records in"),
        "no progress lines into a pipe: {}",
        ran.stderr
    );

    // A terminal (script(1) gives the importer a pseudo-terminal): a live
    // line per collection, ending with its figures.
    publish();
    let command = format!("{} run --mode linear", importer_program().display());
    let output = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .envs(env.settings.env_vars())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run script(1)");
    assert!(output.status.success(), "{output:?}");
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(
        screen.contains("records written") && screen.contains("messages left in the queue"),
        "a live line while it runs: {screen}"
    );
    assert!(
        screen.contains("20000 records in") && screen.contains("0 inserted, 20000 updated"),
        "the customers' line ends with their figures: {screen}"
    );
    env.cleanup().await;
}

//! The contract checked three ways at once: every example of
//! `docs/message-format.md`, every row of its refusal table that a body can
//! show, and values at each limit, given both to a JSON Schema validator
//! (`docs/schema/<kind>.schema.json`, draft 2020-12) and to the importer's
//! decoder (`hpn_common::message::decode`). They must give the same verdict
//! on every case, but for the few a JSON Schema cannot express, which are
//! listed by name in [`SCHEMA_CANNOT_SAY`]: for those the test requires that
//! they still differ, so a change on either side is noticed. Python's
//! `jsonschema` and JavaScript's Ajv, run as their users run them, must give
//! the Rust validator's verdict on every case: publishers use all three.

use hpn_common::message;
use hpn_common::RecordKind;
use serde_json::Value;
use std::path::Path;

/// Cases where the schema and the importer differ, and why no JSON Schema
/// can follow the importer there. Each must still differ.
const SCHEMA_CANNOT_SAY: [(&str, &str); 3] = [
    (
        "an integer written with a fraction (quantity 3.0)",
        "JSON Schema's `integer` is any number with a zero fraction, so 3.0 is one; the importer reads JSON \
         integers only, as the contract says",
    ),
    ("a version written with a fraction (7.0)", "the same for `_version`"),
    (
        "a member named twice",
        "a JSON Schema validator sees the object after parsing, where the last of two equal names won; the \
         importer refuses the record (RFC 8259 leaves such objects to the reader)",
    ),
];

/// One case: the kind of queue, the body, and the name it is reported by.
struct Case {
    name: String,
    kind: RecordKind,
    body: String,
}

fn case(name: impl Into<String>, kind: RecordKind, body: impl Into<String>) -> Case {
    Case {
        name: name.into(),
        kind,
        body: body.into(),
    }
}

fn customer_with(field: &str, value: Value) -> String {
    let mut c: serde_json::Map<String, Value> = serde_json::from_str(
        r#"{"user_id":"C1","name":"Ann","address":"1 Main St","phone_number":"555","email":"a@example.com"}"#,
    )
    .unwrap();
    if value.is_null() {
        c.remove(field);
    } else {
        c.insert(field.to_string(), value);
    }
    Value::Object(c).to_string()
}

fn product_with(field: &str, value: Value) -> String {
    let mut p: serde_json::Map<String, Value> = serde_json::from_str(
        r#"{"product_id":"P1","description":"Sofa","product_type":"livingroom","quantity_available":3}"#,
    )
    .unwrap();
    p.insert(field.to_string(), value);
    Value::Object(p).to_string()
}

/// Every ```json block of the message format page, with the kind its keys say.
fn doc_examples() -> Vec<Case> {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/message-format.md")).unwrap();
    let mut cases = Vec::new();
    for (i, block) in page.split("```json\n").skip(1).enumerate() {
        let body = block.split("```").next().unwrap().trim().to_string();
        let value: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("docs example {i}: {e}"));
        // An array's kind is its first record's; a delete has only its key.
        let first = value.as_array().and_then(|items| items.first()).unwrap_or(&value);
        let has = |k: &str| first.get(k).is_some();
        let kind = if has("name") || (has("user_id") && !has("product_id")) {
            RecordKind::Customer
        } else if has("description") || !has("user_id") {
            RecordKind::Product
        } else {
            RecordKind::Rental
        };
        cases.push(case(format!("the docs' example {}", i + 1), kind, body));
    }
    assert!(cases.len() >= 4, "the page's examples were found: {}", cases.len());
    cases
}

fn corpus() -> Vec<Case> {
    use serde_json::json;
    use RecordKind::{Customer, Product, Rental};
    let long = |n: usize| "n".repeat(n);
    let mut cases = doc_examples();
    let c = |name: &str, field: &str, value: Value| case(name, Customer, customer_with(field, value));
    let p = |name: &str, field: &str, value: Value| case(name, Product, product_with(field, value));
    cases.extend([
        c("a customer", "zip_code", json!("98101")),
        c("no zip_code", "zip_code", Value::Null),
        c("an empty zip_code", "zip_code", json!("")),
        c("no name", "name", Value::Null),
        c("an empty name", "name", json!("")),
        c("a name of spaces", "name", json!("   ")),
        c("a name of 1,024 characters", "name", json!(long(1024))),
        c("a name of 1,025 characters", "name", json!(long(1025))),
        c("a name of 1,024 two-byte characters", "name", json!("é".repeat(1024))),
        c("a name of 1,025 two-byte characters", "name", json!("é".repeat(1025))),
        c("an address on two lines", "address", json!("Flat 2\n12 High St")),
        c(
            "an address with a tab and a carriage return",
            "address",
            json!("a\tb\r\nc"),
        ),
        c("an address with NUL", "address", json!("a\u{0}b")),
        c("an address with escape", "address", json!("a\u{1b}b")),
        c("an address with NEL (U+0085)", "address", json!("a\u{85}b")),
        c("a user_id of 64 characters", "user_id", json!(long(64))),
        c("a user_id of 65 characters", "user_id", json!(long(65))),
        c("an empty user_id", "user_id", json!("")),
        c("a user_id with a space", "user_id", json!("C 1")),
        c("a user_id with a no-break space", "user_id", json!("C\u{a0}1")),
        c(
            "an id with a zero-width no-break space (U+FEFF)",
            "user_id",
            json!("C\u{feff}1"),
        ),
        c("a user_id that is a number", "user_id", json!(7)),
        c("an email without @", "email", json!("a.example.com")),
        c("an email with two @", "email", json!("a@b@example.com")),
        c("an email with nothing before @", "email", json!("@example.com")),
        c("an email without a dotted domain", "email", json!("a@example")),
        c(
            "an email whose domain starts with a dot",
            "email",
            json!("a@.example.com"),
        ),
        c(
            "an email whose domain ends with a dot",
            "email",
            json!("a@example.com."),
        ),
        c("an email with a space", "email", json!("a b@example.com")),
        c("the shortest email", "email", json!("a@b.c")),
        c("an unknown field", "age", json!(40)),
        c("a version", "_version", json!(7)),
        c("the largest version", "_version", json!(i64::MAX)),
        c("the smallest version", "_version", json!(i64::MIN)),
        c("a version written with a fraction (7.0)", "_version", json!(7.0)),
        c("a version as text", "_version", json!("7")),
        c(
            "extra columns",
            "extra",
            json!({"status": "Active", "credit-limit": "500"}),
        ),
        c(
            "32 extra columns",
            "extra",
            Value::Object((0..32).map(|i| (format!("x{i}"), json!("v"))).collect()),
        ),
        c(
            "33 extra columns",
            "extra",
            Value::Object((0..33).map(|i| (format!("x{i}"), json!("v"))).collect()),
        ),
        c("an extra column named with _", "extra", json!({"_x": "v"})),
        c("an extra column named like a field", "extra", json!({"email": "v"})),
        c("an extra column named extra", "extra", json!({"extra": "v"})),
        c("an extra column with a space in its name", "extra", json!({"a b": "v"})),
        c("an extra column of a number", "extra", json!({"n": 5})),
        c("an extra value with NUL", "extra", json!({"n": "a\u{0}"})),
        c(
            "extra columns named in other scripts",
            "extra",
            json!({"όνομα": "v", "名前": "v", "नाम": "v", "٣-x": "v", "Ⅻ": "v", "𝐱𝟙": "v", "𠀋": "v"}),
        ),
        c("an extra column named with a symbol", "extra", json!({"a€": "v"})),
        c("an extra column named with an emoji", "extra", json!({"a😀": "v"})),
        c(
            "an extra column named with a combining accent",
            "extra",
            json!({"e\u{301}": "v"}),
        ),
        c(
            "an extra column named with a no-break space",
            "extra",
            json!({"a\u{a0}b": "v"}),
        ),
        c(
            "a name of ideographic spaces (U+3000)",
            "name",
            json!("\u{3000}\u{3000}"),
        ),
        c("a name of a line separator (U+2028)", "name", json!("\u{2028}")),
        c(
            "a name of a zero-width no-break space (U+FEFF)",
            "name",
            json!("\u{feff}"),
        ),
        c("a user_id with an en quad (U+2000)", "user_id", json!("C\u{2000}1")),
        c(
            "an email with an ideographic space",
            "email",
            json!("a\u{3000}b@example.com"),
        ),
        p("a product", "product_type", json!("livingroom")),
        p("no stock", "quantity_available", json!(0)),
        p("the largest stock", "quantity_available", json!(u32::MAX)),
        p(
            "a stock over the largest",
            "quantity_available",
            json!(u64::from(u32::MAX) + 1),
        ),
        p("a negative stock", "quantity_available", json!(-1)),
        p(
            "an integer written with a fraction (quantity 3.0)",
            "quantity_available",
            json!(3.0),
        ),
        p("a stock as text", "quantity_available", json!("3")),
        p("an empty description", "description", json!("")),
        case("a rental", Rental, r#"{"product_id":"P1","user_id":"C1"}"#),
        case("a rental without user_id", Rental, r#"{"product_id":"P1"}"#),
        case(
            "a rental with a customer's field",
            Rental,
            r#"{"product_id":"P1","user_id":"C1","name":"x"}"#,
        ),
        case(
            "an array of two",
            Customer,
            format!(
                "[{},{}]",
                customer_with("user_id", json!("A")),
                customer_with("user_id", json!("B"))
            ),
        ),
        case("an empty array", Customer, "[]"),
        case(
            "an array with one bad record among good",
            Customer,
            format!(
                "[{},{}]",
                customer_with("user_id", json!("A")),
                customer_with("name", json!(""))
            ),
        ),
        case(
            "an array of 10,000",
            Rental,
            format!("[{}]", vec![r#"{"product_id":"P","user_id":"U"}"#; 10_000].join(",")),
        ),
        case(
            "an array of 10,001",
            Rental,
            format!("[{}]", vec![r#"{"product_id":"P","user_id":"U"}"#; 10_001].join(",")),
        ),
        case("an array of arrays", Rental, r#"[[{"product_id":"P","user_id":"U"}]]"#),
        case(
            "a member named twice",
            Rental,
            r#"{"product_id":"P1","user_id":"C1","user_id":"C2"}"#,
        ),
        case("a delete", Customer, r#"{"user_id":"C1","_deleted":true,"_version":7}"#),
        case(
            "a delete without a version",
            Customer,
            r#"{"user_id":"C1","_deleted":true}"#,
        ),
        c("a delete with the record's fields", "_deleted", json!(true)),
        c("a record marked as not deleted", "_deleted", json!(false)),
        c("a record marked deleted with text", "_deleted", json!("true")),
        case(
            "a delete marked with null",
            Customer,
            r#"{"user_id":"C1","_deleted":null}"#,
        ),
        case(
            "a delete with another field",
            Customer,
            r#"{"user_id":"C1","colour":"red","_deleted":true}"#,
        ),
        case(
            "a delete with a product's field",
            Customer,
            r#"{"user_id":"C1","description":"x","_deleted":true}"#,
        ),
        case(
            "a delete whose other fields are of any type",
            Customer,
            r#"{"user_id":"C1","name":7,"email":null,"_deleted":true}"#,
        ),
        case(
            "a delete without its key",
            Customer,
            r#"{"_deleted":true,"_version":7}"#,
        ),
        case("a delete of an empty id", Customer, r#"{"user_id":"","_deleted":true}"#),
        case(
            "a delete of an id with a space",
            Customer,
            r#"{"user_id":"C 1","_deleted":true}"#,
        ),
        case(
            "a delete whose version is text",
            Customer,
            r#"{"user_id":"C1","_deleted":true,"_version":"7"}"#,
        ),
        case(
            "a key marked as not deleted, without the record",
            Customer,
            r#"{"user_id":"C1","_deleted":false}"#,
        ),
        case(
            "a product delete",
            Product,
            r#"{"product_id":"P1","_deleted":true,"_version":7}"#,
        ),
        case(
            "a rental delete",
            Rental,
            r#"{"product_id":"P1","user_id":"C1","_deleted":true,"_version":7}"#,
        ),
        case(
            "a rental delete without its user_id",
            Rental,
            r#"{"product_id":"P1","_deleted":true}"#,
        ),
        case(
            "an array of records and deletes",
            Rental,
            r#"[{"product_id":"P1","user_id":"C1"},{"product_id":"P2","user_id":"C1","_deleted":true,"_version":7}]"#,
        ),
        case("not JSON", Customer, "not JSON {"),
        case("a number", Customer, "42"),
        case("a string", Customer, r#""C1""#),
        case("null", Customer, "null"),
    ]);
    cases
}

/// The importer's verdict: every record of the body stored, none refused.
fn importer_accepts(case: &Case) -> bool {
    let properties = message::properties(case.kind, None);
    match message::decode(
        case.kind,
        &properties,
        case.body.as_bytes(),
        message::DEFAULT_MAX_MESSAGE_BYTES,
    ) {
        Ok(decoded) => decoded.invalid.is_empty(),
        Err(_) => false,
    }
}

fn validators() -> Vec<(RecordKind, jsonschema::Validator)> {
    RecordKind::ALL
        .iter()
        .map(|&kind| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../docs/schema/{kind}.schema.json"));
            let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let validator = jsonschema::draft202012::new(&schema)
                .unwrap_or_else(|e| panic!("{} is not a valid draft 2020-12 schema: {e}", path.display()));
            (kind, validator)
        })
        .collect()
}

#[test]
fn the_schemas_and_the_importer_agree_on_every_case_but_those_a_schema_cannot_say() {
    let validators = validators();
    let mut disagree = Vec::new();
    let mut differ_as_documented = Vec::new();
    let cases = corpus();
    for case in &cases {
        let validator = &validators.iter().find(|(k, _)| *k == case.kind).unwrap().1;
        let schema_accepts = serde_json::from_str::<Value>(&case.body).is_ok_and(|v| validator.is_valid(&v));
        let importer = importer_accepts(case);
        let documented = SCHEMA_CANNOT_SAY.iter().any(|(name, _)| *name == case.name);
        match (schema_accepts == importer, documented) {
            (true, false) => {}
            (false, true) => differ_as_documented.push(case.name.clone()),
            (true, true) => disagree.push(format!(
                "{}: listed as one the schema cannot say, but they agree now",
                case.name
            )),
            (false, false) => disagree.push(format!(
                "{}: schema {}, importer {}",
                case.name,
                if schema_accepts { "accepts" } else { "refuses" },
                if importer { "accepts" } else { "refuses" }
            )),
        }
    }
    eprintln!(
        "{} cases; {} agree; differing as documented: {differ_as_documented:?}",
        cases.len(),
        cases.len() - differ_as_documented.len() - disagree.len()
    );
    assert!(
        disagree.is_empty(),
        "the schemas and the importer disagree:\n{}",
        disagree.join("\n")
    );
    assert_eq!(
        differ_as_documented.len(),
        SCHEMA_CANNOT_SAY.len(),
        "every documented difference was tried"
    );
}

#[test]
fn every_schema_is_valid_and_its_examples_pass_it() {
    for (kind, validator) in validators() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../docs/schema/{kind}.schema.json"));
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let examples = schema["examples"].as_array().expect("examples");
        assert!(!examples.is_empty());
        for example in examples {
            assert!(validator.is_valid(example), "{kind}: {example}");
            let body = example.to_string();
            assert!(
                importer_accepts(&case("example", kind, body)),
                "{kind}: the importer refuses {example}"
            );
        }
    }
}

/// The AsyncAPI description parses and validates with the official parser
/// (@asyncapi/parser from the npm registry, installed by `scripts/contract`),
/// its payloads the three schemas above.
#[test]
fn the_asyncapi_document_is_valid_to_the_official_parser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let parser = contract_tools();
    assert!(
        parser.join("node_modules/@asyncapi/parser").exists(),
        "the AsyncAPI parser is not installed in {}: run scripts/contract",
        parser.display()
    );
    std::fs::copy(
        root.join("scripts/lib/asyncapi-validate.mjs"),
        parser.join("asyncapi-validate.mjs"),
    )
    .unwrap();
    let output = std::process::Command::new("node")
        .arg(parser.join("asyncapi-validate.mjs"))
        .arg(root.join("docs/asyncapi.yaml"))
        .output()
        .expect("node runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{said}");
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains("valid AsyncAPI 3.0.0, 6 channels, 6 operations, 3 messages"),
        "{said}"
    );
}

/// `examples/python/publish.py`, run against the real broker with
/// `hpn-importer serve` consuming: the store ends as its README says.
#[tokio::test]
async fn the_python_example_publishes_what_its_readme_says_is_stored() {
    use hpn_tests::process::{eventually, Importer};
    use hpn_tests::{documents, TestEnv};
    use std::time::Duration;
    let env = TestEnv::new("python_example");
    let (_connection, _channel) = env.channel().await; // the queues, declared
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/publish.py");
    let python = std::env::var("HPN_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = std::process::Command::new(&python)
        .arg(&script)
        .env("HPN_AMQP_URL", &env.settings.amqp_url)
        .env("HPN_QUEUE_PREFIX", &env.settings.queue_prefix)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "publish.py (pika installed by scripts/contract): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut importer = Importer::start(&env, &[]);
    let store = env.store().await;
    eventually(Duration::from_secs(60), "every record stored", || async {
        store.count(RecordKind::Customer).await.unwrap() == 98
            && store.count(RecordKind::Product).await.unwrap() == 10
            && store.count(RecordKind::Rental).await.unwrap() == 1
    })
    .await;
    let dead = env.settings.topology().dead_letter_queue(RecordKind::Customer);
    eventually(
        Duration::from_secs(30),
        "the nameless customer dead-lettered",
        || async { env.ready(&dead).await == 1 },
    )
    .await;
    importer.signal("TERM");
    assert!(importer.wait(Duration::from_secs(15)).await.success());
    let queue = env.settings.topology().queue(RecordKind::Customer);
    assert_eq!(env.ready(&queue).await, 0, "every message was handled");
    let customers = documents(&store, RecordKind::Customer).await;
    let named = |id: &str| {
        customers
            .iter()
            .find(|d| d.get_str("user_id") == Ok(id))
            .and_then(|d| d.get_str("name").ok().map(str::to_string))
    };
    assert_eq!(
        named("PY000").as_deref(),
        Some("Customer 0, renamed"),
        "the newer version won"
    );
    assert_eq!(
        named("PY001").as_deref(),
        Some("Customer 1"),
        "the older one, published later, changed nothing"
    );
    for id in ["PY002", "PY003"] {
        let stored = customers.iter().find(|d| d.get_str("user_id") == Ok(id)).unwrap();
        assert_eq!(
            stored.get_bool(hpn_importer::document::DELETED_FIELD),
            Ok(true),
            "{id} is a tombstone, even after an older version came: {stored}"
        );
        assert!(stored.get("name").is_none(), "{stored}");
    }
    let products = hpn_tests::versions(&store, RecordKind::Product).await;
    assert!(
        products.iter().all(|(_, v)| *v == Some(5)),
        "the header's version: {products:?}"
    );
    env.cleanup().await;
}

/// The importer's own rules, spelled as character classes that ECMA-262
/// (Ajv), Python's `re` (`jsonschema`) and Rust's `regex` read alike: each
/// character is written out, never as `\s`, `\w` or `\p{…}`, which the three
/// read differently or not at all (Python's `re` has no `\p{L}`, and its
/// `\s` takes U+001C–U+001F where ECMA-262's takes U+FEFF). A character of
/// the Basic Multilingual Plane is the escape `\uXXXX` all three read; one
/// beyond it is the character itself (written as a JSON escape in the
/// file), since no escape beyond it is read by all three.
mod spelled {
    /// The characters `rule` takes, as the inside of a character class.
    fn class(rule: impl Fn(char) -> bool) -> String {
        let mut ranges: Vec<(char, char)> = Vec::new();
        for c in (0..=0x10FFFF).filter_map(char::from_u32).filter(|&c| rule(c)) {
            match ranges.last_mut() {
                Some((_, last)) if u32::from(*last) + 1 == u32::from(c) => *last = c,
                _ => ranges.push((c, c)),
            }
        }
        let one = |c: char| match u32::from(c) {
            n if n < 0x10000 => format!("\\u{n:04X}"),
            _ => c.to_string(),
        };
        ranges
            .iter()
            .map(|&(a, b)| match u32::from(b) - u32::from(a) {
                0 => one(a),
                1 => format!("{}{}", one(a), one(b)),
                _ => format!("{}-{}", one(a), one(b)),
            })
            .collect()
    }

    /// Each pattern of the schemas, by its place (a JSON pointer), as the
    /// importer's rules have it (`hpn_common::record`).
    pub fn patterns() -> Vec<(&'static str, String)> {
        // Spaces: what `char::is_whitespace` takes (Unicode's White_Space).
        let s = class(char::is_whitespace);
        // A kept column's name: what `char::is_alphanumeric` takes, `_`, `-`.
        let a = class(char::is_alphanumeric);
        vec![
            ("/$defs/id/pattern", format!("^[^{s}\\u0000-\\u001F\\u007F-\\u009F]+$")),
            ("/$defs/required_text/allOf/1/pattern", format!("[^{s}]")),
            (
                "/$defs/email/allOf/1/pattern",
                format!("^[^@{s}]+@[^@{s}.][^@{s}]*\\.[^@{s}]*[^@{s}.]$"),
            ),
            (
                "/$defs/extra/propertyNames/allOf/0/pattern",
                format!("^[{a}-][{a}_-]*$"),
            ),
        ]
    }

    /// `value` as a JSON string in ASCII: what the schema files hold.
    pub fn json_ascii(value: &str) -> String {
        let mut text = String::new();
        for c in serde_json::to_string(value).unwrap().chars() {
            if c.is_ascii() {
                text.push(c);
            } else {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    text.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
        text
    }
}

/// The schemas' patterns are the importer's rules as [`spelled`] writes
/// them. `HPN_WRITE_SCHEMA_PATTERNS=1` writes them into the files when a
/// rule changes.
#[test]
fn the_schemas_patterns_are_the_importers_rules_spelled_for_every_validator() {
    let write = std::env::var_os("HPN_WRITE_SCHEMA_PATTERNS").is_some();
    for kind in RecordKind::ALL {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../docs/schema/{kind}.schema.json"));
        let mut text = std::fs::read_to_string(&path).unwrap();
        let schema: Value = serde_json::from_str(&text).unwrap();
        for (place, pattern) in spelled::patterns() {
            let held = schema
                .pointer(place)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{kind}: no pattern at {place}"));
            if held == pattern {
                continue;
            }
            assert!(write, "{kind} {place}: the pattern is not the importer's rule spelled out; run this test with HPN_WRITE_SCHEMA_PATTERNS=1");
            let (old, new) = (spelled::json_ascii(held), spelled::json_ascii(&pattern));
            assert!(text.contains(&old), "{kind} {place}: the pattern as written");
            text = text.replace(&old, &new);
        }
        if write {
            std::fs::write(&path, &text).unwrap();
        }
    }
}

/// What a validator of another language says of every case, run as its
/// users would: `python3` with `jsonschema`, `node` with Ajv (both
/// installed by `scripts/contract`), through `scripts/lib/validate-schemas.*`.
fn verdicts_of(language: &str, cases: &[Case]) -> Vec<bool> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let folder = tempfile::tempdir().unwrap();
    let listed = folder.path().join("cases.json");
    let list: Vec<Value> = cases
        .iter()
        .map(|c| serde_json::json!({"kind": c.kind.to_string(), "body": c.body}))
        .collect();
    std::fs::write(&listed, serde_json::to_string(&list).unwrap()).unwrap();
    let schemas = root.join("docs/schema");
    let mut command = match language {
        "Python" => {
            let python = std::env::var("HPN_PYTHON").unwrap_or_else(|_| "python3".into());
            let mut command = std::process::Command::new(python);
            command.arg(root.join("scripts/lib/validate-schemas.py"));
            command
        }
        _ => {
            let tools = contract_tools();
            std::fs::copy(
                root.join("scripts/lib/validate-schemas.mjs"),
                tools.join("validate-schemas.mjs"),
            )
            .unwrap();
            let mut command = std::process::Command::new("node");
            command.arg(tools.join("validate-schemas.mjs"));
            command
        }
    };
    let output = command.arg(&schemas).arg(&listed).output().expect("the validator runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{language}: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{language}: {e}: {stderr}"))
}

/// Where `scripts/contract` installs the Node.js tools (the AsyncAPI parser, Ajv).
fn contract_tools() -> std::path::PathBuf {
    std::env::var_os("HPN_ASYNCAPI_PARSER_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").expect("HOME")).join(".cache"));
            cache.join("hpnorton/asyncapi")
        })
}

/// Python's `jsonschema` and JavaScript's Ajv load the schemas (Python's
/// checks each pattern compiles) and give, on every case of the corpus and
/// on the schemas' examples, the verdict the Rust validator gives, which the
/// test above holds to the importer's.
#[test]
fn python_and_javascript_validators_give_the_rust_validators_verdict_on_every_case() {
    let validators = validators();
    let mut cases = corpus();
    for (kind, _) in &validators {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../docs/schema/{kind}.schema.json"));
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (i, example) in schema["examples"].as_array().unwrap().iter().enumerate() {
            cases.push(case(format!("{kind} example {}", i + 1), *kind, example.to_string()));
        }
    }
    let rust: Vec<bool> = cases
        .iter()
        .map(|case| {
            let validator = &validators.iter().find(|(k, _)| *k == case.kind).unwrap().1;
            serde_json::from_str::<Value>(&case.body).is_ok_and(|v| validator.is_valid(&v))
        })
        .collect();
    for language in ["Python", "JavaScript"] {
        let theirs = verdicts_of(language, &cases);
        assert_eq!(theirs.len(), cases.len(), "{language}: a verdict per case");
        let differ: Vec<String> = cases
            .iter()
            .zip(rust.iter().zip(&theirs))
            .filter(|(_, (r, t))| r != t)
            .map(|(case, (r, _))| {
                format!(
                    "{} (Rust {}, {language} not)",
                    case.name,
                    if *r { "accepts" } else { "refuses" }
                )
            })
            .collect();
        eprintln!("{language}: {} cases, {} differ", cases.len(), differ.len());
        assert!(
            differ.is_empty(),
            "{language} differs from Rust:\n{}",
            differ.join("\n")
        );
    }
}

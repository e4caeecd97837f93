//! The message decoder on anything a publisher could send: any body, with
//! or without a content type, a `type` property and a version header. It
//! must never panic or hang, and what it accepts must survive the trip back:
//! the records it returns, encoded as our producer would and decoded again,
//! are the same records (so decoder and encoder agree on every rule).
#![no_main]

use hpn_common::message::{self, header};
use hpn_common::RecordKind;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let kind = RecordKind::ALL[usize::from(control % 3)];
    let mut properties = BasicProperties::default();
    if control & 0x04 != 0 {
        properties = properties.with_content_type("application/json".into());
    }
    if control & 0x08 != 0 {
        let other = RecordKind::ALL[usize::from((control >> 6) % 3)];
        properties = properties.with_type(other.as_str().into());
    }
    if control & 0x10 != 0 {
        let mut headers = FieldTable::default();
        headers.insert(header::VERSION.into(), AMQPValue::LongLongInt(i64::from(control)));
        properties = properties.with_headers(headers);
    }
    let Ok(decoded) = message::decode(kind, &properties, body, message::DEFAULT_MAX_MESSAGE_BYTES) else {
        return;
    };
    if decoded.records.is_empty() {
        return;
    }
    let again = message::encode(&decoded.records);
    let plain = BasicProperties::default();
    let round = message::decode(kind, &plain, &again, usize::MAX)
        .unwrap_or_else(|e| panic!("our own encoding of accepted records is refused: {e}"));
    assert_eq!(round.records, decoded.records, "records changed on the way back");
    assert!(round.invalid.is_empty());
});

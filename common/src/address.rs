//! Server addresses, checked when the settings are read and shown only
//! without their password.
//!
//! An address is a setting: one with no scheme, a port that is no number
//! or a scheme we do not speak can never connect, so it is refused before
//! anything starts, once, as a settings error. Left to the connect, it
//! would be blamed on the broker, retried for ever by `serve`, and printed
//! whole in the client library's words (lapin's "Invalid URL: '…'"),
//! password included. Every message here names the address by its place
//! in the setting and shows it [`redacted`]; a parser's own words pass
//! through [`hide_password`] before they are shown.

/// The schemes of an AMQP 0-9-1 address, as lapin and RabbitMQ read them.
const AMQP_SCHEMES: [&str; 2] = ["amqp", "amqps"];

/// The addresses in a comma-separated list (the nodes of a cluster), blanks
/// dropped.
pub fn addresses(urls: &str) -> Vec<&str> {
    urls.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

/// Check every address of a comma-separated RabbitMQ setting as lapin will
/// read it. The error names the address's place and shows it redacted.
pub fn check_amqp_urls(urls: &str) -> Result<(), String> {
    let addresses = addresses(urls);
    if addresses.is_empty() {
        return Err("the RabbitMQ address is empty".into());
    }
    for (i, url) in addresses.iter().enumerate() {
        let place = if addresses.len() > 1 {
            format!("RabbitMQ address {} of {} ({})", i + 1, addresses.len(), redacted(url))
        } else {
            format!("RabbitMQ address {}", redacted(url))
        };
        let reason = match scheme(url) {
            None => Some("it has no scheme: it must start with amqp:// or amqps://".to_string()),
            Some(s) if !AMQP_SCHEMES.contains(&s) => Some(format!("its scheme is {s}://, not amqp:// or amqps://")),
            Some(_) => url
                .parse::<lapin::uri::AMQPUri>()
                .err()
                .map(|why| format!("it cannot be read ({})", hide_password(&why, url))),
        };
        if let Some(reason) = reason {
            return Err(format!("{place}: {reason}"));
        }
    }
    Ok(())
}

/// The scheme of an address written `scheme://…`, or `None` when it has
/// none (`guest:pw@host:5672` has none: `guest:` is no scheme of ours).
pub fn scheme(address: &str) -> Option<&str> {
    let (scheme, _) = address.split_once("://")?;
    let well_formed = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    well_formed.then_some(scheme)
}

/// The password of an address, where it has one, however malformed the
/// rest: what lies between the user's `:` and the last `@` of the part
/// before the query. `None` when there is none to hide.
fn password(address: &str) -> Option<&str> {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let before_query = rest.split_once('?').map_or(rest, |(before, _)| before);
    let (userinfo, _) = before_query.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// An address with its password replaced by `***`, for messages and logs;
/// an address without one comes back as it is.
pub fn redacted(address: &str) -> String {
    match password(address) {
        Some(password) => {
            let start = password.as_ptr() as usize - address.as_ptr() as usize;
            format!("{}***{}", &address[..start], &address[start + password.len()..])
        }
        None => address.to_string(),
    }
}

/// `text` (a parser's or a client library's words about `address`) with
/// the address's password, as written and percent-decoded, replaced by `***`.
pub fn hide_password(text: &str, address: &str) -> String {
    let Some(password) = password(address) else {
        return text.to_string();
    };
    let decoded = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
    let mut hidden = text.replace(password, "***");
    if !decoded.is_empty() && decoded != password {
        hidden = hidden.replace(decoded.as_ref(), "***");
    }
    hidden
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_hidden_however_the_address_is_written() {
        for (address, shown) in [
            ("amqp://guest:secret@host:5672/%2f", "amqp://guest:***@host:5672/%2f"),
            ("guest:secret@127.0.0.1:5672/%2f", "guest:***@127.0.0.1:5672/%2f"),
            ("mongodb://u:se@cret@h1,h2/?tls=true", "mongodb://u:***@h1,h2/?tls=true"),
            ("amqp://host:5672/?x=a@b", "amqp://host:5672/?x=a@b"),
            ("amqp://guest@host", "amqp://guest@host"),
        ] {
            assert_eq!(redacted(address), shown);
        }
        assert_eq!(
            hide_password("Invalid URL: 'u:p%40ss@h' (p@ss)", "u:p%40ss@h"),
            "Invalid URL: 'u:***@h' (***)"
        );
    }

    #[test]
    fn an_amqp_address_lapin_cannot_read_is_refused_without_its_password() {
        let refused = |urls: &str, says: &str| {
            let why = check_amqp_urls(urls).unwrap_err();
            assert!(why.contains(says), "{urls}: {why}");
            assert!(!why.contains("S3cret"), "{why}");
        };
        refused("guest:S3cret@127.0.0.1:5672/%2f", "has no scheme");
        refused("http://guest:S3cret@host/", "its scheme is http://");
        refused("amqp://guest:S3cret@host:99999/%2f", "invalid port number");
        refused("amqp://guest:S3cret@host:5672/%2f?heartbeat=often", "invalid digit");
        refused(
            "amqp://a:5672/%2f, amqp//guest:S3cret@b:5672/%2f",
            "RabbitMQ address 2 of 2 (amqp//guest:***@b:5672/%2f): it has no scheme",
        );
        refused(" , ", "empty");
        for good in [
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "amqps://h:5671/%2f?cacertfile=/ca.pem&heartbeat=5",
            "amqp://a:5672/%2f,amqp://b:5673/%2f",
            "amqp://localhost",
        ] {
            assert_eq!(check_amqp_urls(good), Ok(()), "{good}");
        }
    }
}

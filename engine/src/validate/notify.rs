//! The rules of a workflow's `notify`: which statuses, at least one way to tell, a
//! webhook URL that is http(s), an email given as the `email` connector's arguments
//! (checked as that connector checks them when it runs).

use crate::definition::Notify;

/// Each problem as (pointer under `/notify`, message).
pub fn check(n: &Notify) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if n.on.is_empty() {
        out.push((
            "/on".to_owned(),
            "name at least one status: succeeded, failed, timed_out or cancelled".to_owned(),
        ));
    }
    for (i, a) in n.on.iter().enumerate() {
        if n.on[..i].contains(a) {
            out.push((format!("/on/{i}"), "is listed twice".to_owned()));
        }
    }
    if n.webhook.is_none() && n.email.is_none() {
        out.push((
            String::new(),
            "give a `webhook`, an `email`, or both: nothing would be told".to_owned(),
        ));
    }
    if let Some(w) = &n.webhook {
        let rest = w
            .url
            .strip_prefix("https://")
            .or_else(|| w.url.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            out.push((
                "/webhook/url".to_owned(),
                format!("{:?} is not an http:// or https:// URL with a host", w.url),
            ));
        }
        if let Some(s) = &w.secret
            && (s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            out.push((
                "/webhook/secret".to_owned(),
                format!("{s:?} is not a secret name (letters, digits, '-', '_', '.')"),
            ));
        }
    }
    if let Some(e) = &n.email
        && !e.is_object()
    {
        out.push((
            "/email".to_owned(),
            "must be an object: the email connector's arguments (smtp, from, to)".to_owned(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{NotifyOn, NotifyWebhook};

    fn notify(url: &str) -> Notify {
        Notify {
            on: vec![NotifyOn::Failed],
            webhook: Some(NotifyWebhook {
                url: url.into(),
                secret: Some("hook-key".into()),
            }),
            email: None,
        }
    }

    #[test]
    fn a_good_notify_passes_and_each_mistake_is_named() {
        assert!(check(&notify("https://hooks.example.com/aiq")).is_empty());
        let bad = check(&notify("ftp://x"));
        assert_eq!(bad[0].0, "/webhook/url");
        let mut n = notify("http://127.0.0.1:9/x");
        n.on = vec![NotifyOn::Failed, NotifyOn::Failed];
        n.webhook = None;
        let pointers: Vec<String> = check(&n).into_iter().map(|(p, _)| p).collect();
        assert_eq!(pointers, vec!["/on/1".to_owned(), String::new()]);
        n.on.clear();
        n.email = Some(serde_json::json!("ops@example.com"));
        let pointers: Vec<String> = check(&n).into_iter().map(|(p, _)| p).collect();
        assert_eq!(pointers, vec!["/on".to_owned(), "/email".to_owned()]);
    }
}

//! What each connector's arguments look like as a form: the fields a person fills in to
//! make a task step without writing its `args` by hand (the console's workflow builder
//! reads them from `GET /v1/connectors`). Data only; a test builds the arguments every
//! form produces and has each connector's own parser accept them, so a form cannot
//! drift from what its connector takes.

use serde::Serialize;

/// How a field is entered, and so how its value is written into `args`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "options")]
pub enum FieldKind {
    /// One line of text; may hold `${ ... }` expressions.
    Text,
    /// Several lines of text.
    LongText,
    /// An absolute URL.
    Url,
    /// A whole number.
    Number,
    /// Yes or no.
    Boolean,
    /// One of the listed values.
    Choice(&'static [&'static str]),
    /// The name of one of the tenant's secrets (picked from their names, never a value).
    Secret,
    /// A list of text values (entered comma-separated).
    List,
    /// Any JSON value.
    Json,
}

/// One field of a connector's form.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Field {
    /// Where the value goes in `args`, dotted for nested objects (`smtp.host`).
    pub path: &'static str,
    pub label: &'static str,
    #[serde(flatten)]
    pub kind: FieldKind,
    pub required: bool,
    /// A sentence for the person filling it in.
    pub help: &'static str,
    /// What the field starts with, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<&'static str>,
}

/// One connector's form.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ConnectorForm {
    /// The connector's name, as a task step's `connector`.
    pub connector: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub fields: &'static [Field],
}

const fn field(path: &'static str, label: &'static str, kind: FieldKind) -> Field {
    Field {
        path,
        label,
        kind,
        required: false,
        help: "",
        default: None,
    }
}

const fn required(mut f: Field) -> Field {
    f.required = true;
    f
}

const fn help(mut f: Field, text: &'static str) -> Field {
    f.help = text;
    f
}

const fn default(mut f: Field, value: &'static str) -> Field {
    f.default = Some(value);
    f
}

const HTTP: &[Field] = &[
    default(
        help(
            field(
                "method",
                "Method",
                FieldKind::Choice(&["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]),
            ),
            "The HTTP method.",
        ),
        "GET",
    ),
    required(help(
        field("url", "URL", FieldKind::Url),
        "Where to send the request; may use ${ input.… } and ${ steps.<id>.output… }.",
    )),
    help(
        field("json", "JSON body", FieldKind::Json),
        "Sent as application/json (POST, PUT, PATCH).",
    ),
    help(
        field("headers", "Headers", FieldKind::Json),
        "An object of header names and values.",
    ),
];

const EMAIL: &[Field] = &[
    required(help(
        field("smtp.host", "SMTP server", FieldKind::Text),
        "The mail server's host name.",
    )),
    help(
        field("smtp.port", "SMTP port", FieldKind::Number),
        "587 for STARTTLS (the default), 465 for TLS.",
    ),
    default(
        help(
            field(
                "smtp.tls",
                "Encryption",
                FieldKind::Choice(&["starttls", "tls", "none"]),
            ),
            "How the connection to the server is protected.",
        ),
        "starttls",
    ),
    help(
        field("smtp.username", "SMTP user", FieldKind::Text),
        "Who signs in to the server, if it asks.",
    ),
    help(
        field("smtp.password_secret", "SMTP password", FieldKind::Secret),
        "The secret holding that user's password.",
    ),
    required(help(
        field("from", "From", FieldKind::Text),
        "The sender, e.g. AutomateIQ <robot@example.com>.",
    )),
    required(help(
        field("to", "To", FieldKind::List),
        "One or more addresses, separated by commas.",
    )),
    required(help(
        field("subject", "Subject", FieldKind::Text),
        "May use ${ input.… }.",
    )),
    help(
        field("text", "Message", FieldKind::LongText),
        "The plain-text body.",
    ),
];

const NOOP: &[Field] = &[help(
    field("output", "Output", FieldKind::Json),
    "What the step returns (a test or a placeholder).",
)];

/// Every connector the builder offers, in the order it lists them.
pub const FORMS: &[ConnectorForm] = &[
    ConnectorForm {
        connector: "http",
        title: "HTTP request",
        description: "Calls a web address and returns its answer.",
        fields: HTTP,
    },
    ConnectorForm {
        connector: "email",
        title: "Send an email",
        description: "Sends a message through an SMTP server.",
        fields: EMAIL,
    },
    ConnectorForm {
        connector: "noop",
        title: "Placeholder",
        description: "Does nothing and returns its output: for trying a workflow out.",
        fields: NOOP,
    },
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Map, Value, json};

    use super::*;

    /// The value a person would enter for `f`, as the builder writes it into `args`.
    fn sample(f: &Field) -> Value {
        match f.kind {
            FieldKind::Text | FieldKind::LongText | FieldKind::Secret => json!("x"),
            FieldKind::Url => json!("https://example.test/path"),
            FieldKind::Number => json!(587),
            FieldKind::Boolean => json!(true),
            FieldKind::Choice(options) => json!(options[0]),
            FieldKind::List => json!(["a@example.test", "b@example.test"]),
            FieldKind::Json => json!({"k": "v"}),
        }
    }

    fn put(args: &mut Map<String, Value>, path: &str, value: Value) {
        match path.split_once('.') {
            None => {
                args.insert(path.to_owned(), value);
            }
            Some((head, rest)) => {
                let inner = args
                    .entry(head.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                put(inner.as_object_mut().unwrap(), rest, value);
            }
        }
    }

    fn args(form: &ConnectorForm, all: bool) -> Value {
        let mut args = Map::new();
        for f in form.fields.iter().filter(|f| all || f.required) {
            put(&mut args, f.path, sample(f));
        }
        Value::Object(args)
    }

    #[test]
    fn every_form_makes_arguments_its_connector_accepts() {
        for form in FORMS {
            for all in [false, true] {
                let a = args(form, all);
                assert!(
                    crate::check_args(form.connector, &a).is_ok(),
                    "{} rejects {a}: {:?}",
                    form.connector,
                    crate::check_args(form.connector, &a)
                );
            }
        }
    }

    #[test]
    fn a_form_without_a_required_field_makes_arguments_its_connector_refuses() {
        for form in FORMS {
            for f in form.fields.iter().filter(|f| f.required) {
                let mut a = args(form, true);
                let (head, last) = match f.path.rsplit_once('.') {
                    Some((h, l)) => (Some(h), l),
                    None => (None, f.path),
                };
                let target = match head {
                    Some(h) => a.get_mut(h).unwrap(),
                    None => &mut a,
                };
                target.as_object_mut().unwrap().remove(last);
                assert!(
                    crate::check_args(form.connector, &a).is_err(),
                    "{} accepts args without {}: {a}",
                    form.connector,
                    f.path
                );
            }
        }
    }

    #[test]
    fn the_forms_serialise_with_their_kind_beside_each_field() {
        let v = serde_json::to_value(FORMS).unwrap();
        assert_eq!(v[0]["connector"], "http");
        assert_eq!(v[0]["fields"][0]["kind"], "choice");
        assert_eq!(v[0]["fields"][0]["options"][0], "GET");
        assert_eq!(v[0]["fields"][1]["kind"], "url");
        assert_eq!(v[0]["fields"][1]["required"], true);
    }
}

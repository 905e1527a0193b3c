//! The trigger API, webhooks and the workflow registry (issue 4).

//! Authentication and roles for every HTTP-facing stage.

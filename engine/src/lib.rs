//! Workflow definitions, validation and the pure run state machine.

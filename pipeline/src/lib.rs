//! Stream stages that advance workflow runs. The orchestrator and workers land here (issues 5 and 6).

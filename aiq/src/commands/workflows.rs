//! `aiq workflows validate FILE...`: offline validation, one line per error.

use std::process::ExitCode;

use crate::cli::WorkflowsCommand;

pub fn run(cmd: WorkflowsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WorkflowsCommand::Validate { files } => {
            let mut invalid = 0;
            let mut errors = 0;
            for file in &files {
                let name = file.display().to_string();
                let outcome = std::fs::read_to_string(file)
                    .map_err(|e| vec![format!("{name}: cannot read: {e}")])
                    .and_then(|text| {
                        aiq_engine::validate_source(&name, &text)
                            .map_err(|errs| errs.iter().map(ToString::to_string).collect())
                    });
                match outcome {
                    Ok(wf) => eprintln!(
                        "{name}: valid ({} steps, content hash {})",
                        wf.step_count(),
                        &wf.content_hash()[..12]
                    ),
                    Err(lines) => {
                        invalid += 1;
                        errors += lines.len();
                        for line in lines {
                            println!("{line}");
                        }
                    }
                }
            }
            if invalid > 0 {
                eprintln!(
                    "{invalid} of {} file(s) invalid, {errors} error(s)",
                    files.len()
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

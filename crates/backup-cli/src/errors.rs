//! How an error of a command reaches the user: one line, each cause
//! once, and the exit code of DESIGN.md section 5.

use backup_ops::exit;

/// The operations layer's error in the chain, if any.
pub(crate) fn ops_error(e: &anyhow::Error) -> Option<&backup_ops::Error> {
    e.chain()
        .find_map(|c| c.downcast_ref::<backup_ops::Error>())
}

/// The error and its causes on one line, each cause once.
pub(crate) fn report(e: &anyhow::Error) -> String {
    backup_core::error::report(e.as_ref())
}

/// Maps an error to the exit code of DESIGN.md.
pub(crate) fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(ops) = ops_error(e) {
        return ops.exit_code();
    }
    e.chain()
        .find_map(|c| c.downcast_ref::<backup_core::Error>())
        .map_or(exit::FAILED, exit::of_core)
}

/// Whether the error is a closed standard output (`backup ls | head`),
/// which is not a failure.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

//! The end-to-end suites' runner: each case a function named after what it proves, listed
//! once with [`cases!`](crate::cases) or [`standalone_cases!`](crate::standalone_cases), run one at a
//! time (cases count stats before and after their requests) by libtest-mimic, so the suites
//! take libtest's arguments and print its summary.

use crate::Outcome;
use libtest_mimic::{Arguments, Failed, Trial};
use std::sync::{Arc, OnceLock};

/// A case run against the suite's shared world.
pub type Case<W> = (&'static str, fn(&W) -> Outcome);
/// A case that starts what it needs itself.
pub type StandaloneCase = (&'static str, fn() -> Outcome);

/// What the cases of a suite share: started on first use, stopped when the suite ends.
pub trait World: Sized + Send + Sync + 'static {
    fn start() -> Result<Self, String>;
    /// What to print under a failed case (the last lines of a log, say).
    fn context(&self) -> String;
}

/// Lists a file's cases on the suite's world, each named after its function:
/// `cases!(World; case_a, case_b)`.
#[macro_export]
macro_rules! cases {
    ($world:ty; $($case:ident),+ $(,)?) => {
        pub fn cases() -> Vec<$crate::cases::Case<$world>> {
            vec![$((stringify!($case), $case as fn(&$world) -> $crate::Outcome)),+]
        }
    };
}

/// Lists a file's standalone cases, each named after its function.
#[macro_export]
macro_rules! standalone_cases {
    ($($case:ident),+ $(,)?) => {
        pub fn cases() -> Vec<$crate::cases::StandaloneCase> {
            vec![$((stringify!($case), $case as fn() -> $crate::Outcome)),+]
        }
    };
}

/// Runs the selected cases one at a time and exits as libtest would.
pub fn run<W: World>(
    cases: Vec<Case<W>>,
    standalone: Vec<StandaloneCase>,
) -> std::process::ExitCode {
    let mut arguments = Arguments::from_args();
    arguments.test_threads = Some(1);
    let world: Arc<OnceLock<Result<W, String>>> = Arc::new(OnceLock::new());
    let mut trials: Vec<Trial> = cases
        .into_iter()
        .map(|(name, case)| {
            let world = Arc::clone(&world);
            Trial::test(name, move || {
                let world = world
                    .get_or_init(W::start)
                    .as_ref()
                    .map_err(|e| Failed::from(format!("the suite's world did not start: {e}")))?;
                case(world).map_err(|error| Failed::from(format!("{error}\n{}", world.context())))
            })
        })
        .collect();
    trials.extend(
        standalone
            .into_iter()
            .map(|(name, case)| Trial::test(name, move || case().map_err(Failed::from))),
    );
    let conclusion = libtest_mimic::run(&arguments, trials);
    // The trials are gone: the last handle stops what the world started.
    drop(world);
    conclusion.exit_code()
}

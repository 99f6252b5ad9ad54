//! Black-box tests of the sandbox over real HTTP (one test binary, faster linking).

mod faults;
mod golden;
mod helpers;
mod paging;
mod progressions;
mod scenario_file;
mod webhooks;

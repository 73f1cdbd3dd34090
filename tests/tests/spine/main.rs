//! Black-box tests of the sync spine, each run against the real binary on every backend.

mod auth;
mod blobs;
mod campaigns;
mod contract;
mod submissions;
mod uploads;

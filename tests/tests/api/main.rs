//! Black-box tests of the HTTP API, each run against the real binary on every backend.

mod audit;
mod auth;
mod blobs;
mod browser;
mod campaigns;
mod console;
mod contract;
mod copies;
mod demo;
mod enketo;
mod evidence;
mod exports;
mod faults;
mod ground_truth;
mod limits;
mod openrosa;
mod reconcile;
mod registry;
mod review;
mod submissions;
mod uploads;

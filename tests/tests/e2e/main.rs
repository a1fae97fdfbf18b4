#![allow(unreachable_pub, reason = "test modules share helpers through pub items")]

//! End-to-end tests: real `valora dev` processes, real mutual TLS, a real
//! database, and clients nobody here wrote (grpcurl, Python grpcio).

mod alerts;
mod api_keys;
mod attacks;
mod auth;
mod bench_smoke;
mod browser;
mod clients;
mod cluster;
mod deploy_manifests;
mod dev_command;
mod faultproxy;
mod faults;
mod grpcurl;
mod identity;
mod least_privilege;
mod mtls;
mod operations;
mod pki;
mod postgres;
mod python;
mod rate_limits;
mod readme;
mod restart;
mod streaming;
mod support;
mod validation;
mod web;
mod webhooks;

//! Metrics flow: kernel maps and the published view -> collectors (at
//! scrape) -> registry -> HTTP.

pub mod exposition;
pub mod gunicorn;
pub mod resources;
pub mod routes;
pub mod server;
pub mod view;
pub mod web_config;

//! The HTTP routes. Each module documents its handlers with `utoipa::path`, and the router is built
//! from those same declarations, so the OpenAPI document and the served routes cannot drift apart.

pub mod admin;
pub mod commands;
pub mod deals;
pub mod gateways;
pub mod health;
pub mod openapi;
pub mod payments;
pub mod users;
mod validate;

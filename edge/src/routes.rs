//! [`ApiRouter`]: an axum router that also records every (method, path) it serves, so the route
//! table can be checked against the OpenAPI document (see `openapi`'s tests). Resource modules
//! add routes only through it.

use crate::state::AppState;
use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, patch, post, put};

/// The prefix every API route is served under.
pub const API_PREFIX: &str = "/api/v1";

/// One served route.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteSpec {
    /// Lowercase method, as in OpenAPI (`get`, `post`, …).
    pub method: String,
    /// Full path with `{param}` templates, e.g. `/api/v1/agents/{id}`.
    pub path: String,
}

/// A router under [`API_PREFIX`] that remembers its routes.
#[derive(Default)]
pub struct ApiRouter {
    router: Router<AppState>,
    table: Vec<RouteSpec>,
}

impl ApiRouter {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(mut self, method: Method, path: &str, route: MethodRouter<AppState>) -> Self {
        self.table.push(RouteSpec {
            method: method.as_str().to_ascii_lowercase(),
            // OpenAPI writes a catch-all `{*rest}` as a plain `{rest}` parameter.
            path: format!("{API_PREFIX}{}", path.replace("{*", "{")),
        });
        self.router = self.router.route(path, route);
        self
    }

    /// `GET path`.
    pub fn get<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::GET, path, get(handler))
    }

    /// `POST path`.
    pub fn post<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::POST, path, post(handler))
    }

    /// `PUT path`.
    pub fn put<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::PUT, path, put(handler))
    }

    /// `PATCH path`.
    pub fn patch<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::PATCH, path, patch(handler))
    }

    /// `DELETE path`.
    pub fn delete<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::DELETE, path, delete(handler))
    }

    /// Adds every route of `other`.
    pub fn merge(mut self, other: ApiRouter) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// The routes served, sorted.
    pub fn table(&self) -> Vec<RouteSpec> {
        let mut table = self.table.clone();
        table.sort();
        table
    }

    /// The axum router (paths relative to [`API_PREFIX`]).
    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}

//! The page's files (`web-ui/assets/`), embedded in the binary: no build step, no files to install.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::error::ApiError;

#[derive(rust_embed::RustEmbed)]
#[folder = "assets/"]
struct Assets;

fn serve(name: &str) -> Result<HttpResponse, ApiError> {
    let file = Assets::get(name).ok_or_else(|| ApiError::not_found(format!("no file {name:?}")))?;
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, mime.as_ref()))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(file.data.into_owned()))
}

pub async fn index() -> Result<HttpResponse, ApiError> {
    serve("index.html")
}

/// `/assets/{name}`: only names the binary holds (no paths: a `/` or `..` is never one of them).
pub async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    serve(&name)
}

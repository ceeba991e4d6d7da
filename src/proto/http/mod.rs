//! HTTP/1.1 on httparse, sans-IO: the one request-head parser (`head`),
//! the API's request parser with its bodies (`parser`), query strings
//! (`query`) and response bytes (`response`). The WebSocket upgrade and the
//! auth URL's answer read heads through `head` too.

pub mod head;
pub mod parser;
pub mod query;
pub mod response;

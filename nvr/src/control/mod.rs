//! The recorder's control socket: a Unix stream socket (`<data_dir>/control.sock`, mode 0660) speaking
//! length-prefixed JSON (`docs/control.md`). [`protocol`] holds the messages and framing, [`server`]
//! the recorder's side, [`client`] the side of `nvr ctl`.
//!
//! The socket is never on the ingest path: requests become commands queued to a stream's task without
//! waiting (a full queue is an error), and a slow or hostile client only ever holds its own connection.

pub mod client;
pub mod protocol;
pub mod server;

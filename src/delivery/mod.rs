//! Delivery: one bounded outbox per connection, with the coalescing and 4008 policy (api.md), shared by
//! every door. A door only frames what its outbox gives it: the WebSocket writes the frames as text
//! frames; a CometD session or a feed will wrap them in their own envelopes.

pub mod outbox;

pub mod render;

pub use outbox::{Backlog, DrainError, Frame, Outbox, OutboxLimits, Pushed};
pub use render::Renderer;

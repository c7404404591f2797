//! Where every source hands its events: straight to the pipeline, or, with `--nats`, through the
//! JetStream writers first (each event is stored in its T-Server's stream before the reducer sees it).

use crate::jetstream::writer::Writer;
use crate::journal::Position;
use crate::journal::live::{Failed, Progress};
use crate::pipeline::{Pipeline, Submission};
use std::sync::Arc;

/// Why a batch was not taken. Nothing of it after the first refused event reached the reducer.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The journal could not be written (with `--journal` as well).
    #[error(transparent)]
    Journal(#[from] Failed),
    /// A publish failed or was refused.
    #[error("JetStream stream {stream}: {reason}")]
    Publish {
        /// The stream.
        stream: String,
        /// What went wrong.
        reason: String,
    },
    /// Another gateway writes this T-Server's stream.
    #[error(
        "JetStream stream {stream} is written by another gateway (its last message is not this one's); restart this gateway to read it again"
    )]
    Fenced {
        /// The stream.
        stream: String,
    },
    /// The gateway is stopping.
    #[error("the gateway is stopping")]
    Stopping,
}

/// The ingest side of the pipeline, shared by the ingest connections and the demo.
pub struct Intake {
    pipeline: Arc<Pipeline>,
    jetstream: Option<Arc<Writer>>,
}

impl Intake {
    /// Events go to `pipeline`, through `jetstream` first when given.
    pub fn new(pipeline: Arc<Pipeline>, jetstream: Option<Arc<Writer>>) -> Self {
        Self {
            pipeline,
            jetstream,
        }
    }

    /// Hands a source's events on, in order. Returns the journal position the batch waits for (with
    /// `--journal`), or why it was refused: nothing from the first refused event on reached the reducer,
    /// and the T-Server resends it from its last ack.
    pub async fn submit(&self, batch: Vec<Submission>) -> Result<Option<Position>, Refused> {
        match &self.jetstream {
            Some(writer) => writer.submit(batch).await,
            None => Ok(self.pipeline.submit(batch).await?),
        }
    }

    /// How far the journal is durable (`None` without one).
    pub fn progress(&self) -> Option<Progress> {
        self.pipeline.progress()
    }

    /// Stops the JetStream writers (at shutdown, once the sources have stopped).
    pub fn close(&self) {
        if let Some(writer) = &self.jetstream {
            writer.close();
        }
    }
}

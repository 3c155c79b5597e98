//! How many sandboxes are awake, as the agents read model counts them, against the platform's
//! cap (`WARREN_MAX_SANDBOXES`, docs/adr/0024-idle-pause-and-capacity.md). An agent being
//! deployed or running holds a sandbox that runs; a paused one is frozen (it uses no CPU and
//! does not count), and stopped, failed and deleted ones run nothing. The edge asks before it
//! creates, starts, repairs or redeploys an agent; the chat worker before it resumes one for a
//! message.
//!
//! The count is the read model's, so two admissions decided within the same few milliseconds
//! may both pass: the cap is a soft one, exceeded at most by the admissions in flight at once.

use sqlx::PgPool;
use warren_domain::agent::AgentStatus;

/// The statuses whose sandbox is awake.
pub const AWAKE: [AgentStatus; 3] = [
    AgentStatus::Pending,
    AgentStatus::Deploying,
    AgentStatus::Running,
];

/// How many agents' sandboxes are awake now.
pub async fn awake(db: &PgPool) -> Result<u64, sqlx::Error> {
    let statuses: Vec<&str> = AWAKE.iter().map(|status| status.as_str()).collect();
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM agents WHERE status = ANY($1)")
        .bind(statuses)
        .fetch_one(db)
        .await?;
    Ok(count.max(0) as u64)
}

/// Whether one more sandbox may wake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room {
    /// Yes.
    Free,
    /// No: `awake` sandboxes run, `max` may.
    Full {
        /// Awake now.
        awake: u64,
        /// The cap.
        max: u32,
    },
}

/// The cap on awake sandboxes, and where they are counted.
#[derive(Clone, Debug, Default)]
pub struct Capacity {
    max: u32,
    db: Option<PgPool>,
}

impl Capacity {
    /// No cap.
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// At most `max` awake sandboxes (0: no cap), counted in `db`.
    pub fn new(max: u32, db: PgPool) -> Self {
        Self { max, db: Some(db) }
    }

    /// The cap (0: none).
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Whether one more sandbox may wake now.
    pub async fn room(&self) -> Result<Room, sqlx::Error> {
        let Some(db) = self.db.as_ref().filter(|_| self.max > 0) else {
            return Ok(Room::Free);
        };
        let awake = awake(db).await?;
        Ok(if awake < u64::from(self.max) {
            Room::Free
        } else {
            Room::Full {
                awake,
                max: self.max,
            }
        })
    }
}

//! Wire types and pure functions shared by the huikan server and its clients: what a phone
//! submits, how its content is hashed, and the parsed newtypes validated once at the edge.

pub mod content;
pub mod de;
pub mod division;
pub mod geo;
pub mod idcard;
pub mod ids;
pub mod limits;
pub mod submission;

pub use content::content_sha256;
pub use ids::{CampaignId, DivisionPrefix, Sha256Hex};
pub use submission::{PhotoKind, Submission};

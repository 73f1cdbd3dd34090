//! Who sees a 身份证号 whole. Field staff (for their villages: they check identity at the door)
//! and admins do; reviewers and auditors see it masked unless they ask with `?unmask=true`.

use huikan_shared::submission::mask_id_number;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Caller, Role};
use crate::error::{AppError, Result};

#[derive(Deserialize, Default)]
pub struct UnmaskQuery {
    #[serde(default)]
    unmask: Option<String>,
}

impl UnmaskQuery {
    /// Whether the caller sees full ID numbers in this answer (parsing the query only).
    pub fn sees_full_id_numbers(&self, caller: &Caller) -> Result<bool> {
        let asked = match self.unmask.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(AppError::invalid_query(format!(
                    "unmask must be true or false, got {other:?}"
                )));
            }
        };
        Ok(asked || matches!(caller.role, Role::FieldStaff | Role::Admin))
    }
}

/// Masks the ID numbers of a list of members (a JSON array of objects with `id_number`), and
/// drops what would give the hidden part back: the birth date, and a problem that quotes it.
pub fn mask_members(members: Option<&mut Value>) {
    let Some(members) = members.and_then(Value::as_array_mut) else {
        return;
    };
    for member in members {
        if let Some(Value::String(id)) = member.get_mut("id_number") {
            *id = mask_id_number(id);
        }
        for revealing in ["birth_date", "id_number_problem"] {
            if let Some(field) = member.get_mut(revealing) {
                *field = Value::Null;
            }
        }
    }
}

/// Records that `caller` was shown the full ID numbers of `subject` (every such read is audited).
pub async fn record_full_read(
    db: &crate::db::Db,
    caller: &Caller,
    subject: String,
    data: Value,
) -> Result<()> {
    let entry = crate::audit::Entry::new(&caller.username, "id_numbers.read", subject, data);
    crate::audit::record(db, std::slice::from_ref(&entry)).await
}

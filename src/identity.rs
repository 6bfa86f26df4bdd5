//! Which Airflow task this pod runs. Set by the Airflow side through flags or
//! `TASK_AGENT_*` variables; stamped on JSON log lines and on the result record.

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TaskIdentity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dag_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub try_number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_index: Option<i64>,
}

impl TaskIdentity {
    /// The identity as JSON object members, each preceded by a comma (`,"tenant":"a"`), so a
    /// log line can append it without building a map per line. Empty when nothing is set.
    pub fn json_members(&self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map
                .iter()
                .map(|(key, value)| format!(",{}:{}", serde_json::Value::from(key.as_str()), value))
                .collect(),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_append_to_a_json_object() {
        let identity = TaskIdentity {
            tenant: Some("user1".into()),
            task_id: Some("va\"lidate".into()),
            try_number: Some(2),
            ..Default::default()
        };
        let line = format!("{{\"a\":1{}}}", identity.json_members());
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["tenant"], "user1");
        assert_eq!(parsed["task_id"], "va\"lidate");
        assert_eq!(parsed["try_number"], 2);
        assert!(parsed.get("dag_id").is_none());
    }

    #[test]
    fn no_identity_adds_nothing() {
        assert_eq!(TaskIdentity::default().json_members(), "");
    }
}

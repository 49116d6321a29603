//! Human in the loop over HTTP: each run of this server gets a human channel
//! ([`belt_core::patterns::hitl`]); its open questions are listed at `GET /v1/approvals`
//! and answered at `POST /v1/runs/{id}/approvals/{request_id}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use belt_core::patterns::hitl::{self, Answer, HitlError, Human, HumanRequest, Question};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;

/// An open question for a person.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Approval {
    /// `{run id}:hitl/{name}`; in a URL, escape `/` as `%2F` (or send only `hitl/{name}`'s
    /// name part after the run id, see the answer route).
    pub id: String,
    pub run_id: String,
    pub step: String,
    /// `approval` (answer `{"approve": true|false}`), `select` (`{"select": INDEX}`) or
    /// `input` (`{"text": "..."}`).
    pub kind: String,
    /// The choices of a `select`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    pub prompt: String,
    /// What is taken if nobody answers in time.
    #[schemars(with = "serde_json::Value")]
    pub default: Answer,
    pub timeout_secs: u64,
    pub asked_at: DateTime<Utc>,
}

/// The open questions.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalList {
    pub approvals: Vec<Approval>,
}

/// The answer to a question: `{"approve": true}`, `{"select": 0}` or `{"text": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AnswerBody {
    Approve(bool),
    Select(usize),
    Text(String),
}

impl From<AnswerBody> for Answer {
    fn from(a: AnswerBody) -> Self {
        match a {
            AnswerBody::Approve(b) => Answer::Approve(b),
            AnswerBody::Select(i) => Answer::Select(i),
            AnswerBody::Text(t) => Answer::Text(t),
        }
    }
}

/// Every run's human channel and open questions.
#[derive(Default)]
pub struct Approvals {
    humans: Mutex<HashMap<String, Human>>,
    open: Mutex<BTreeMap<String, Approval>>,
}

impl Approvals {
    /// A channel for `run_id`: the run asks on the returned [`Human`]; its questions are
    /// collected here until the run ends.
    pub(crate) fn channel(self: &std::sync::Arc<Self>, run_id: &str) -> Human {
        let (human, mut requests) = hitl::channel();
        self.humans.lock().unwrap_or_else(|p| p.into_inner()).insert(run_id.to_string(), human.clone());
        let me = self.clone();
        let run_id = run_id.to_string();
        tokio::spawn(async move {
            // Ends when the run and `finish` have dropped every clone of its Human.
            while let Some(r) = requests.recv().await {
                me.add(&run_id, r);
            }
            me.open.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, a| a.run_id != run_id);
        });
        human
    }

    /// The run ended: forget its channel and questions.
    pub(crate) fn finish(&self, run_id: &str) {
        self.humans.lock().unwrap_or_else(|p| p.into_inner()).remove(run_id);
        self.open.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, a| a.run_id != run_id);
    }

    fn add(&self, run_id: &str, r: HumanRequest) {
        let (kind, options) = match &r.question {
            Question::Approval => ("approval", Vec::new()),
            Question::Select { options } => ("select", options.clone()),
            Question::Input => ("input", Vec::new()),
        };
        let approval = Approval {
            id: r.id.clone(),
            run_id: run_id.to_string(),
            step: r.step.to_string(),
            kind: kind.into(),
            options,
            prompt: r.prompt,
            default: r.default,
            timeout_secs: r.timeout.as_secs(),
            asked_at: Utc::now(),
        };
        self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(r.id, approval);
    }

    /// The questions still open (answered and timed-out ones drop out).
    pub fn list(&self) -> Vec<Approval> {
        let humans = self.humans.lock().unwrap_or_else(|p| p.into_inner());
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|id, a| humans.get(&a.run_id).is_some_and(|h| h.open().contains(id)));
        open.values().cloned().collect()
    }

    /// Answer `request_id` of `run_id`.
    pub fn answer(&self, run_id: &str, request_id: &str, answer: Answer) -> Result<(), ApiError> {
        let human = self.humans.lock().unwrap_or_else(|p| p.into_inner()).get(run_id).cloned();
        let Some(human) = human else {
            return Err(ApiError::NotFound(format!(
                "run {run_id} has no open questions (it is not running on this server); GET /v1/approvals lists them"
            )));
        };
        // Accept the full id or the part after `{run id}:`.
        let id = if request_id.starts_with(&format!("{run_id}:")) {
            request_id.to_string()
        } else {
            format!("{run_id}:{request_id}")
        };
        match human.answer(&id, answer) {
            Ok(()) => {
                self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                Ok(())
            }
            Err(e @ HitlError::UnknownRequest { .. }) => Err(ApiError::NotFound(e.to_string())),
            Err(e @ HitlError::NotOpen { .. }) => Err(ApiError::Conflict(e.to_string())),
            Err(e @ HitlError::InvalidAnswer { .. }) => Err(ApiError::Invalid(e.to_string())),
            Err(e) => Err(ApiError::Invalid(e.to_string())),
        }
    }
}

pub(crate) async fn list(State(app): State<AppState>) -> Json<ApprovalList> {
    Json(ApprovalList { approvals: app.manager.approvals().list() })
}

/// Taken.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Answered {
    pub id: String,
    pub answered: bool,
}

pub(crate) async fn answer(
    State(app): State<AppState>,
    Path((run_id, request_id)): Path<(String, String)>,
    body: Result<Json<AnswerBody>, JsonRejection>,
) -> Result<Json<Answered>, ApiError> {
    let Json(body) = body?;
    if app.manager.get(&run_id).is_none() && app.store.get_run(&run_id).await?.is_none() {
        return Err(ApiError::UnknownRun(run_id));
    }
    app.manager.approvals().answer(&run_id, &request_id, body.into())?;
    Ok(Json(Answered { id: request_id, answered: true }))
}

//! Conditional routing: one of several registered agents handles the input.
//!
//! The route is chosen by
//! - a **value** from the context ([`Choose::Value`]): the route of that name;
//! - a **value of the run's context** ([`Choose::Context`], [`crate::Task::context`]): the
//!   route named by the value at a path (`customer.tier`);
//! - **predicates** ([`Choose::Predicate`]): the first route, in registration order, whose
//!   predicate holds for the input;
//! - an **LLM classifier** ([`Choose::Llm`]): one step, `{scope}/classify`, shows the model
//!   every route with its description and asks for a name. The reply is read tolerantly
//!   (an exact name, else the first route named in it).
//!
//! The chosen route's agent then runs as `{scope}/{route}` (`router/billing`). A value that
//! is not a route is an error listing the valid routes. A classifier that names none, or
//! predicates that match none, is an error too — unless a fallback route is set, which then
//! handles the input ([`RoutedBy::Fallback`] says why).
//!
//! ```
//! use belt_core::patterns::{Agent, router::{Choose, Router}};
//! let support = Router::new("router")
//!     .route("billing", "invoices, refunds and payments", Agent::llm("simulated/default", "Billing desk."))
//!     .route_when("outage", "the service is down", |t| t.contains("down"), Agent::llm("simulated/default", "On call."))
//!     .route("general", "anything else", Agent::llm("simulated/default", "Help desk."))
//!     .fallback("general");
//! // support.run(&ctx, Choose::Llm("simulated/default".into()), "Why was I charged twice?").await?;
//! ```

use std::sync::Arc;

use crate::ctx::{Ctx, StepError};
use crate::llm::LlmRequest;
use crate::patterns::Agent;
use crate::step::{StepId, StepSpec, Tier};

type Predicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone)]
struct Route {
    name: String,
    description: String,
    when: Option<Predicate>,
    agent: Agent,
}

/// How the route is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Choose {
    /// The route of this name (a value from the context: a field, a user's choice…).
    Value(String),
    /// The route named by the run's context ([`Ctx::context`]) at this path: dotted
    /// (`customer.tier`) or a JSON pointer (`/customer/tier`); a string, number or boolean.
    Context(String),
    /// The first route whose predicate holds for the input.
    Predicate,
    /// An LLM classifier on this model (`provider/model`), over the routes' descriptions.
    Llm(String),
}

/// How the route was chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum RoutedBy {
    Value,
    /// The run's context at this path.
    Context {
        path: String,
    },
    Predicate,
    /// The classifier's step and its reply.
    Classifier {
        step: StepId,
        reply: Arc<str>,
    },
    /// Nothing chose a valid route; the fallback took the input. Says what went wrong.
    Fallback {
        reason: String,
    },
}

/// A routed input.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub route: String,
    pub by: RoutedBy,
    pub step: StepId,
    pub output: Arc<str>,
}

/// Why routing failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    #[error("unknown route `{route}`; valid routes: {}", .valid.join(", "))]
    Unknown { route: String, valid: Vec<String> },
    #[error("no route matched the input; valid routes: {}", .valid.join(", "))]
    NoMatch { valid: Vec<String> },
    #[error(
        "the run's context has no route name at `{path}` (a string, number or boolean is needed); valid routes: {}",
        .valid.join(", ")
    )]
    NoContextValue { path: String, valid: Vec<String> },
    #[error("the classifier named no route (it replied `{reply}`); valid routes: {}", .valid.join(", "))]
    Unclassified { reply: String, valid: Vec<String> },
    #[error(transparent)]
    Step(#[from] StepError),
}

/// Registered agents and a way to choose among them (see the module docs).
#[derive(Clone)]
pub struct Router {
    scope: String,
    routes: Vec<Route>,
    fallback: Option<String>,
}

impl Router {
    pub fn new(scope: impl Into<String>) -> Router {
        Router { scope: scope.into(), routes: Vec::new(), fallback: None }
    }

    /// A route: its name, what it handles (shown to the classifier), and its agent. A
    /// route of the same name as an earlier one replaces it.
    pub fn route(self, name: impl Into<String>, description: impl Into<String>, agent: Agent) -> Router {
        self.add(Route { name: name.into(), description: description.into(), when: None, agent })
    }

    /// A route that [`Choose::Predicate`] takes when `when` holds for the input.
    pub fn route_when(
        self,
        name: impl Into<String>,
        description: impl Into<String>,
        when: impl Fn(&str) -> bool + Send + Sync + 'static,
        agent: Agent,
    ) -> Router {
        let when: Predicate = Arc::new(when);
        self.add(Route { name: name.into(), description: description.into(), when: Some(when), agent })
    }

    fn add(mut self, route: Route) -> Router {
        match self.routes.iter_mut().find(|r| r.name == route.name) {
            Some(r) => *r = route,
            None => self.routes.push(route),
        }
        self
    }

    /// The same router with its steps named under `scope`: one router per input when a run
    /// routes many (`ticket/7/classify`, `ticket/7/billing`).
    pub fn in_scope(&self, scope: impl Into<String>) -> Router {
        Router { scope: scope.into(), ..self.clone() }
    }

    /// The route that takes inputs no other route is chosen for.
    pub fn fallback(mut self, route: impl Into<String>) -> Router {
        self.fallback = Some(route.into());
        self
    }

    /// The routes' names, in registration order.
    pub fn routes(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.name.clone()).collect()
    }

    /// Choose a route for `input` and run its agent on it.
    pub async fn run(
        &self,
        ctx: &Ctx,
        choose: Choose,
        input: impl Into<Arc<str>>,
    ) -> Result<Routed, RouteError> {
        let input: Arc<str> = input.into();
        let (chosen, by): (Result<String, RouteError>, RoutedBy) = match choose {
            // An explicit name that is not a route is a mistake to report, not to paper over.
            Choose::Value(name) => match self.find(&name) {
                Some(_) => (Ok(name), RoutedBy::Value),
                None => return Err(RouteError::Unknown { route: name, valid: self.routes() }),
            },
            Choose::Context(path) => {
                let word = ctx.context_at(&path).and_then(crate::plan::context_word);
                let chosen = match word {
                    Some(name) if self.find(&name).is_some() => Ok(name),
                    Some(name) => Err(RouteError::Unknown { route: name, valid: self.routes() }),
                    None => Err(RouteError::NoContextValue { path: path.clone(), valid: self.routes() }),
                };
                (chosen, RoutedBy::Context { path })
            }
            Choose::Predicate => {
                let hit = self.routes.iter().find(|r| r.when.as_ref().is_some_and(|w| w(&input)));
                let chosen =
                    hit.map(|r| r.name.clone()).ok_or_else(|| RouteError::NoMatch { valid: self.routes() });
                (chosen, RoutedBy::Predicate)
            }
            Choose::Llm(model) => {
                let (reply, step) = self.classify(ctx, &model, &input).await?;
                let route = self.read_route(&reply).ok_or_else(|| RouteError::Unclassified {
                    reply: shorten(&reply, 80),
                    valid: self.routes(),
                });
                (route, RoutedBy::Classifier { step, reply })
            }
        };
        let (name, by) = match (chosen, &self.fallback) {
            (Ok(name), _) => (name, by),
            (Err(e), Some(fallback)) if self.find(fallback).is_some() => {
                (fallback.clone(), RoutedBy::Fallback { reason: e.to_string() })
            }
            (Err(e), _) => return Err(e),
        };
        let route = self
            .find(&name)
            .ok_or_else(|| RouteError::Unknown { route: name.clone(), valid: self.routes() })?;
        let mut spec = StepSpec::new(StepId::new(format!("{}/{}", self.scope, route.name)), Tier::Agent);
        if let RoutedBy::Classifier { step, .. } = &by {
            spec = spec.inputs(vec![step.clone()]);
        }
        let step = spec.id.clone();
        let output = route.agent.run(ctx, spec, input).await?;
        Ok(Routed { route: name, by, step, output })
    }

    /// Ask `model` which route fits `input`: its reply and the classifier's step.
    async fn classify(&self, ctx: &Ctx, model: &str, input: &str) -> Result<(Arc<str>, StepId), StepError> {
        let mut prompt = String::from(
            "Choose the agent best suited to handle the request below. Reply with only the agent's name.\n\nAgents:\n",
        );
        for r in &self.routes {
            prompt.push_str(&format!("- {}: {}\n", r.name, r.description));
        }
        prompt.push_str(&format!("\nRequest:\n{input}\n"));
        let request = LlmRequest::new(model, prompt)
            .system("You are a dispatcher. You answer with one agent name from the list, nothing else.")
            .temperature(0.0)
            .max_tokens(20);
        let spec = StepSpec::new(StepId::new(format!("{}/classify", self.scope)), Tier::Agent);
        let step = spec.id.clone();
        Ok((ctx.llm(spec, request).await?.text, step))
    }

    /// The route a classifier's reply names: the whole reply if it is a name, else the route
    /// named first in it (as a whole word, ignoring case).
    pub fn read_route(&self, reply: &str) -> Option<String> {
        let clean = |s: &str| {
            s.trim().trim_matches(|c: char| !c.is_alphanumeric() && c != '_' && c != '-').to_lowercase()
        };
        let whole = clean(reply);
        if let Some(r) = self.routes.iter().find(|r| r.name.to_lowercase() == whole) {
            return Some(r.name.clone());
        }
        let lower = reply.to_lowercase();
        self.routes
            .iter()
            .filter_map(|r| word_position(&lower, &r.name.to_lowercase()).map(|at| (at, r)))
            .min_by_key(|(at, r)| (*at, std::cmp::Reverse(r.name.len())))
            .map(|(_, r)| r.name.clone())
    }

    fn find(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// Where `word` first occurs in `text` as a whole word.
fn word_position(text: &str, word: &str) -> Option<usize> {
    if word.is_empty() {
        return None;
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    let mut from = 0;
    while let Some(i) = text[from..].find(word) {
        let at = from + i;
        let before = text[..at].chars().next_back().is_none_or(|c| !is_word(c));
        let after = text[at + word.len()..].chars().next().is_none_or(|c| !is_word(c));
        if before && after {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

fn shorten(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::patterns::testkit::{record, within};
    use crate::testing::ScriptedProvider;

    fn router() -> Router {
        Router::new("router")
            .route("billing", "invoices, refunds and payments", Agent::llm("t/m", "billing"))
            .route_when("outage", "the service is down", |t| t.contains("down"), Agent::llm("t/m", "on call"))
            .route_when("tech", "technical questions", |t| t.contains("error"), Agent::llm("t/m", "tech"))
    }

    #[tokio::test]
    async fn a_value_picks_its_route_and_an_unknown_one_lists_the_valid_ones() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let r = router();
        let (out, _) = within(&p, move |ctx| async move {
            let ok = r.run(&ctx, Choose::Value("billing".into()), "charged twice").await;
            let bad = r.run(&ctx, Choose::Value("sales".into()), "charged twice").await;
            (ok, bad)
        })
        .await;
        let ok = out.0.unwrap();
        assert_eq!(
            (ok.route.as_str(), ok.step.as_str(), &*ok.output),
            ("billing", "router/billing", "Output of router/billing. ")
        );
        let err = out.1.unwrap_err();
        assert_eq!(
            err,
            RouteError::Unknown {
                route: "sales".into(),
                valid: vec!["billing".into(), "outage".into(), "tech".into()]
            }
        );
        assert_eq!(err.to_string(), "unknown route `sales`; valid routes: billing, outage, tech");
        assert_eq!(p.total_calls(), 1);
    }

    #[tokio::test]
    async fn the_run_context_picks_a_route_by_path() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let (r, fell) = (router(), router().fallback("billing"));
        let context = serde_json::json!({"ticket": {"kind": "outage", "n": 3}});
        let (out, _) = crate::patterns::testkit::within_context(&p, context, move |ctx| async move {
            let dotted = r.run(&ctx, Choose::Context("ticket.kind".into()), "x").await;
            let pointer = r.in_scope("p").run(&ctx, Choose::Context("/ticket/kind".into()), "x").await;
            let missing = r.in_scope("m").run(&ctx, Choose::Context("ticket.queue".into()), "x").await;
            let number = r.in_scope("n").run(&ctx, Choose::Context("ticket.n".into()), "x").await;
            let fallback = fell.in_scope("f").run(&ctx, Choose::Context("ticket.queue".into()), "x").await;
            (dotted, pointer, missing, number, fallback)
        })
        .await;
        let dotted = out.0.unwrap();
        assert_eq!((dotted.route.as_str(), dotted.step.as_str()), ("outage", "router/outage"));
        assert_eq!(dotted.by, RoutedBy::Context { path: "ticket.kind".into() });
        assert_eq!(out.1.unwrap().route, "outage");
        assert_eq!(
            out.2.unwrap_err().to_string(),
            "the run's context has no route name at `ticket.queue` (a string, number or boolean is \
             needed); valid routes: billing, outage, tech"
        );
        assert!(matches!(out.3, Err(RouteError::Unknown { route, .. }) if route == "3"));
        let fallback = out.4.unwrap();
        assert_eq!(fallback.route, "billing");
        assert!(matches!(fallback.by, RoutedBy::Fallback { .. }));
    }

    #[tokio::test]
    async fn predicates_pick_the_first_match_in_order_or_the_fallback() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let r = router();
        let with_fallback = router().fallback("billing");
        let unknown_value = router().fallback("billing");
        let (out, _) = within(&p, move |ctx| async move {
            let both = r.run(&ctx, Choose::Predicate, "it is down with an error").await;
            let tech = r.run(&ctx, Choose::Predicate, "an error").await;
            let none = r.run(&ctx, Choose::Predicate, "hello").await;
            let fell = with_fallback.run(&ctx, Choose::Predicate, "hello").await;
            let unknown = unknown_value.in_scope("u").run(&ctx, Choose::Value("sales".into()), "x").await;
            (both, tech, none, fell, unknown)
        })
        .await;
        assert_eq!(out.0.unwrap().route, "outage", "registration order decides");
        assert_eq!(out.1.unwrap().route, "tech");
        assert_eq!(
            out.2.unwrap_err().to_string(),
            "no route matched the input; valid routes: billing, outage, tech"
        );
        let fell = out.3.unwrap();
        assert_eq!(fell.route, "billing");
        assert!(matches!(&fell.by, RoutedBy::Fallback { reason } if reason.starts_with("no route matched")));
        assert!(matches!(out.4, Err(RouteError::Unknown { .. })), "a fallback never hides an unknown value");
    }

    #[tokio::test]
    async fn the_classifier_chooses_and_its_reply_is_read_tolerantly() {
        let p = Arc::new(ScriptedProvider::new("t").reply_for("router/classify", " **Tech**. "));
        let r = router();
        let (out, result) = within(&p, move |ctx| async move {
            r.run(&ctx, Choose::Llm("t/m".into()), "it fails with error 42").await
        })
        .await;
        let routed = out.unwrap();
        assert_eq!(routed.route, "tech");
        assert!(
            matches!(&routed.by, RoutedBy::Classifier { step, .. } if step.as_str() == "router/classify")
        );
        assert_eq!(record(&result, "router/tech").inputs[0].as_str(), "router/classify");
        assert_eq!(p.calls("router/classify"), 1);

        let r = router();
        assert_eq!(r.read_route("I would send this to the outage team, not billing."), Some("outage".into()));
        assert_eq!(r.read_route("technical"), None, "whole words only");
        assert_eq!(r.read_route("BILLING"), Some("billing".into()));
    }

    #[tokio::test]
    async fn a_classifier_that_names_no_route_is_an_error_listing_them() {
        let p = Arc::new(ScriptedProvider::new("t").reply_for("router/classify", "sales"));
        let r = router();
        let (out, _) =
            within(&p, move |ctx| async move { r.run(&ctx, Choose::Llm("t/m".into()), "buy").await }).await;
        assert_eq!(
            out.unwrap_err().to_string(),
            "the classifier named no route (it replied `sales`); valid routes: billing, outage, tech"
        );
        assert_eq!(p.total_calls(), 1, "no agent ran");
    }
}

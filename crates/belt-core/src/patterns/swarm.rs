//! Swarm: multi-domain search by specialist agents, deduplicated and grouped by domain.
//!
//! A whole run ([`Orchestrator`]). The task is decomposed as the cascade does it (step
//! `decompose`, with its template fallback); each subtask is then given a specialist
//! [`Domain`] — text, image, video, news, academic, social, product, technical or general:
//! - by **keywords** ([`Domain::classify`]; the default): the domain whose keywords the
//!   subtask mentions most, `general` when none;
//! - or by the **LLM** ([`Assign::Llm`]): one step, `swarm/assign`, gets every subtask and
//!   answers a JSON object of subtask number to domain; what it leaves out or gets wrong is
//!   assigned by keywords.
//!
//! Workers (`worker/NNN`) run with their domain's prompt, in parallel. The final output holds
//! the workers' results grouped by domain (in the order above), with every paragraph or list
//! item that an earlier result already gave — compared ignoring case, punctuation and
//! spacing — left out; their own headings are moved two levels down. No synthesis call is
//! made. A plan given by the caller keeps its subtasks; those whose specialization is not a
//! domain name (or is `general`, the default) are classified by keywords.
//!
//! ```
//! use belt_core::patterns::swarm::{Domain, Swarm};
//! assert_eq!(Domain::classify("Latest news on the EU AI Act"), Domain::News);
//! assert_eq!(Domain::classify("Peer-reviewed studies of four-day weeks"), Domain::Academic);
//! assert_eq!(Domain::classify("Where to buy a cargo bike, with prices"), Domain::Product);
//! let swarm = Swarm::new(8, "simulated/default"); // `belt::run(swarm, task, options)`
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ctx::{Ctx, StepError};
use crate::llm::{CallHints, LlmRequest, Providers};
use crate::orchestrator::{AgentOutput, Orchestrator, Outcome, Plan, Synthesis};
use crate::patterns::Cascade;
use crate::plan::{Subtask, Task};
use crate::step::{StepSpec, Tier};

/// A specialist type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    Text,
    Image,
    Video,
    News,
    Academic,
    Social,
    Product,
    Technical,
    General,
}

impl Domain {
    /// Every domain, in the order results are grouped.
    pub const ALL: [Domain; 9] = [
        Domain::News,
        Domain::Academic,
        Domain::Technical,
        Domain::Product,
        Domain::Social,
        Domain::Image,
        Domain::Video,
        Domain::Text,
        Domain::General,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Domain::Text => "text",
            Domain::Image => "image",
            Domain::Video => "video",
            Domain::News => "news",
            Domain::Academic => "academic",
            Domain::Social => "social",
            Domain::Product => "product",
            Domain::Technical => "technical",
            Domain::General => "general",
        }
    }

    pub fn parse(s: &str) -> Option<Domain> {
        let s = s.trim().to_lowercase();
        Domain::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Words and phrases that point to this domain (matched as whole words, any case).
    pub fn keywords(&self) -> &'static [&'static str] {
        match self {
            Domain::News => &[
                "news",
                "latest",
                "recent",
                "breaking",
                "today",
                "this week",
                "announcement",
                "announced",
                "headline",
                "headlines",
                "press release",
                "current events",
                "update",
                "updates",
            ],
            Domain::Academic => &[
                "study",
                "studies",
                "paper",
                "papers",
                "journal",
                "peer-reviewed",
                "academic",
                "scholarly",
                "research",
                "literature",
                "meta-analysis",
                "citation",
                "citations",
                "thesis",
                "evidence",
            ],
            Domain::Technical => &[
                "api",
                "code",
                "documentation",
                "docs",
                "implementation",
                "implement",
                "architecture",
                "library",
                "framework",
                "sdk",
                "install",
                "configure",
                "configuration",
                "protocol",
                "benchmark",
                "performance",
                "bug",
                "technical",
            ],
            Domain::Product => &[
                "product",
                "products",
                "price",
                "prices",
                "pricing",
                "buy",
                "purchase",
                "shop",
                "vendor",
                "vendors",
                "brand",
                "brands",
                "compare",
                "comparison",
                "specs",
                "deal",
                "deals",
                "cost",
            ],
            Domain::Social => &[
                "social media",
                "twitter",
                "reddit",
                "forum",
                "forums",
                "community",
                "sentiment",
                "opinion",
                "opinions",
                "tiktok",
                "instagram",
                "facebook",
                "discussion",
                "discussions",
                "public reaction",
            ],
            Domain::Image => &[
                "image",
                "images",
                "photo",
                "photos",
                "picture",
                "pictures",
                "diagram",
                "diagrams",
                "illustration",
                "infographic",
                "visual",
                "visuals",
                "logo",
                "chart",
                "charts",
            ],
            Domain::Video => &[
                "video",
                "videos",
                "youtube",
                "footage",
                "clip",
                "clips",
                "film",
                "documentary",
                "webinar",
                "livestream",
                "talk",
                "talks",
                "lecture",
            ],
            Domain::Text => &[
                "article",
                "articles",
                "essay",
                "blog",
                "overview",
                "background",
                "definition",
                "history",
                "explain",
                "explanation",
                "summary",
                "guide",
            ],
            Domain::General => &[],
        }
    }

    /// The domain whose keywords `text` mentions most; ties go to the earlier domain in
    /// [`Domain::ALL`]; `General` when none is mentioned.
    pub fn classify(text: &str) -> Domain {
        let lower = text.to_lowercase();
        let mut best = (0, Domain::General);
        for d in Domain::ALL {
            let hits = d.keywords().iter().filter(|k| has_phrase(&lower, k)).count();
            if hits > best.0 {
                best = (hits, d);
            }
        }
        best.1
    }

    /// The worker's system prompt for this domain.
    pub fn role(&self) -> &'static str {
        match self {
            Domain::News => {
                "You are a news researcher. Report recent developments with dates and outlets, newest first."
            }
            Domain::Academic => {
                "You are an academic researcher. Summarise the scholarly evidence: studies, methods, findings and their limits, with citations."
            }
            Domain::Technical => {
                "You are a technical researcher. Give precise technical facts: how it works, specifications, APIs, trade-offs, with references to documentation."
            }
            Domain::Product => {
                "You are a product researcher. Compare products and vendors: features, prices, strengths and weaknesses, with sources."
            }
            Domain::Social => {
                "You are a social-media analyst. Summarise what people say: main opinions, sentiment, recurring arguments, with examples and platforms."
            }
            Domain::Image => {
                "You are an image researcher. Describe the relevant images, diagrams and visual material, what each shows, and where it can be found."
            }
            Domain::Video => {
                "You are a video researcher. List the relevant videos, talks and footage, what each covers, and where it can be found."
            }
            Domain::Text => {
                "You are a reference writer. Give clear background: definitions, history and an overview, with sources."
            }
            Domain::General => {
                "You are a generalist researcher. Find and summarise the most useful information, with sources."
            }
        }
    }

    fn heading(&self) -> &'static str {
        match self {
            Domain::Text => "Text",
            Domain::Image => "Images",
            Domain::Video => "Video",
            Domain::News => "News",
            Domain::Academic => "Academic",
            Domain::Social => "Social",
            Domain::Product => "Products",
            Domain::Technical => "Technical",
            Domain::General => "General",
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Whether `phrase` occurs in `text` (both lowercase) as whole words.
fn has_phrase(text: &str, phrase: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric();
    text.match_indices(phrase).any(|(at, _)| {
        let before = text[..at].chars().next_back().is_none_or(|c| !is_word(c));
        let after = text[at + phrase.len()..].chars().next().is_none_or(|c| !is_word(c));
        before && after
    })
}

/// How subtasks get their domain.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Assign {
    #[default]
    Keywords,
    /// One LLM step decides; keywords fill in what it leaves out.
    Llm,
}

/// The swarm orchestrator (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Swarm {
    pub agents: usize,
    pub model: Arc<str>,
    pub assign: Assign,
    pub max_tokens: u32,
}

impl Swarm {
    /// `agents` specialists on `model`, domains by keywords.
    pub fn new(agents: usize, model: &str) -> Swarm {
        Swarm { agents, model: Arc::from(model), assign: Assign::Keywords, max_tokens: 1024 }
    }

    pub fn assign(mut self, assign: Assign) -> Swarm {
        self.assign = assign;
        self
    }

    /// Domains for the subtasks by one LLM call; `None` where it gave none that is valid.
    async fn assign_by_llm(
        &self,
        ctx: &Ctx,
        task: &Task,
        subtasks: &[Subtask],
    ) -> Result<Vec<Option<Domain>>, StepError> {
        let names: Vec<&str> = Domain::ALL.iter().map(Domain::as_str).collect();
        let mut prompt = format!(
            "Task: {}\nAssign each subtask below the specialist best suited to search for it: one of {}.\n\
             Reply with only a JSON object mapping each subtask's number to a specialist, e.g. {{\"1\": \"news\"}}.\n\n",
            task.brief(),
            names.join(", ")
        );
        for (i, s) in subtasks.iter().enumerate() {
            prompt.push_str(&format!("{}. {}\n", i + 1, s.description.trim()));
        }
        let request =
            LlmRequest::new(&self.model, prompt).temperature(0.0).max_tokens(40 + 12 * subtasks.len() as u32);
        let reply = ctx.llm(StepSpec::new("swarm/assign", Tier::Decomposer), request).await?;
        Ok(parse_assignment(&reply.text, subtasks.len()))
    }
}

/// Read `{"1": "news", …}` (possibly inside other text) into one domain per subtask.
pub fn parse_assignment(text: &str, n: usize) -> Vec<Option<Domain>> {
    let mut out = vec![None; n];
    let (Some(start), Some(end)) = (text.find('{'), text.rfind('}')) else { return out };
    if start >= end {
        return out;
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(&text[start..=end])
    else {
        return out;
    };
    for (k, v) in map {
        if let (Ok(i), Some(d)) = (k.trim().parse::<usize>(), v.as_str().and_then(Domain::parse))
            && (1..=n).contains(&i)
        {
            out[i - 1] = Some(d);
        }
    }
    out
}

/// The domain a subtask runs in: its specialization if that names a domain other than
/// `general` (the default specialization of a plan's subtask), else by keywords.
pub fn domain_of(subtask: &Subtask) -> Domain {
    match Domain::parse(&subtask.specialization) {
        Some(d) if d != Domain::General => d,
        _ => Domain::classify(&subtask.description),
    }
}

/// The results grouped by domain, each paragraph or list item given once.
pub fn group_and_dedupe(plan: &[Subtask], results: &[Outcome]) -> String {
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = String::new();
    for domain in Domain::ALL {
        let mut section = String::new();
        for (s, r) in plan.iter().zip(results) {
            if domain_of(s) != domain {
                continue;
            }
            let body = match r {
                Ok(o) => fresh_blocks(&o.text, &mut seen),
                Err(e) => format!("_No result: {e}_"),
            };
            if body.trim().is_empty() {
                continue;
            }
            section.push_str(&format!("### {}\n\n{}\n\n", s.description.trim(), body.trim_end()));
        }
        if !section.is_empty() {
            out.push_str(&format!("## {}\n\n{section}", domain.heading()));
        }
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

/// The blocks (paragraphs; list items one by one) of `text` not seen before.
fn fresh_blocks(text: &str, seen: &mut HashSet<String>) -> String {
    let mut kept: Vec<String> = Vec::new();
    for para in text.split("\n\n") {
        let lines: Vec<&str> = para.lines().collect();
        let is_list = lines.iter().all(|l| {
            let l = l.trim_start();
            l.starts_with("- ") || l.starts_with("* ") || l.chars().next().is_some_and(|c| c.is_ascii_digit())
        });
        let units: Vec<String> =
            if is_list { lines.iter().map(|l| l.to_string()).collect() } else { vec![para.to_string()] };
        let fresh: Vec<String> = units
            .into_iter()
            .filter(|u| {
                let key = normalize(u);
                // Headings and blank blocks are kept: they are structure, not content.
                key.is_empty() || u.trim_start().starts_with('#') || seen.insert(key)
            })
            .collect();
        if !fresh.is_empty() {
            // Headings go two levels down, under the domain's and the subtask's.
            let demoted: Vec<String> =
                fresh.iter().map(|u| if u.starts_with('#') { format!("##{u}") } else { u.clone() }).collect();
            kept.push(demoted.join("\n"));
        }
    }
    kept.join("\n\n")
}

/// Lowercase letters and digits, words separated by one space.
fn normalize(s: &str) -> String {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

#[async_trait]
impl Orchestrator for Swarm {
    fn name(&self) -> &str {
        "swarm"
    }

    fn agents(&self) -> Option<usize> {
        Some(self.agents)
    }

    fn shape(&self, n: usize) -> Vec<usize> {
        vec![n]
    }

    fn validate(&self, providers: &Providers) -> Result<(), String> {
        if self.agents == 0 {
            return Err("the swarm needs at least 1 agent".into());
        }
        providers.resolve(&self.model).map(|_| ()).map_err(|e| e.to_string())
    }

    async fn decompose(&self, ctx: &Ctx, task: &Task) -> Result<Plan, StepError> {
        let mut plan = Cascade::new(self.agents, &self.model).decompose(ctx, task).await?;
        let by_llm = match self.assign {
            Assign::Keywords => vec![None; plan.subtasks.len()],
            Assign::Llm => match self.assign_by_llm(ctx, task, &plan.subtasks).await {
                Ok(d) => d,
                Err(e) if ctx.stopping().is_some() => return Err(e),
                Err(_) => vec![None; plan.subtasks.len()],
            },
        };
        for (s, d) in plan.subtasks.iter_mut().zip(by_llm) {
            let domain =
                d.unwrap_or_else(|| Domain::classify(&format!("{} {}", s.description, s.specialization)));
            s.specialization = domain.as_str().to_string();
        }
        Ok(plan)
    }

    async fn execute(
        &self,
        ctx: &Ctx,
        step: &StepSpec,
        task: &Task,
        subtask: &Subtask,
        deps: &[AgentOutput],
    ) -> Result<AgentOutput, StepError> {
        let domain = domain_of(subtask);
        let mut prompt = format!(
            "Task: {}\nSubtask {}: {}\nSpecialization: {domain}\n",
            task.brief(),
            subtask.id,
            subtask.description.trim()
        );
        for d in deps {
            prompt.push_str(&format!("\n#### From subtask {}\n{}\n", d.subtask_id, d.text.trim()));
        }
        prompt.push_str(
            "\nReport what you find as Markdown: short paragraphs or a list, each point with its source.",
        );
        let request = LlmRequest::new(&self.model, prompt)
            .system(domain.role())
            .max_tokens(self.max_tokens)
            .hints(CallHints::work(&task.brief(), subtask.description.trim()));
        let reply = ctx.llm(step.clone(), request).await?;
        Ok(AgentOutput::from_reply(subtask, step, reply))
    }

    async fn synthesize(
        &self,
        _ctx: &Ctx,
        _task: &Task,
        plan: &[Subtask],
        results: &[Outcome],
    ) -> Result<Synthesis, StepError> {
        Ok(Synthesis { text: group_and_dedupe(plan, results) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::patterns::testkit::options;
    use crate::result::RunStatus;
    use crate::run::run;
    use crate::step::StepId;
    use crate::testing::ScriptedProvider;

    #[test]
    fn keywords_pick_the_domain_mentioned_most() {
        let cases = [
            ("Latest news about the merger announced this week", Domain::News),
            ("Peer-reviewed studies and meta-analysis of remote work", Domain::Academic),
            ("How to configure the API and install the SDK", Domain::Technical),
            ("Compare prices of cargo bikes and where to buy one", Domain::Product),
            ("What Reddit and Twitter users say: public sentiment", Domain::Social),
            ("Diagrams and photos of the bridge", Domain::Image),
            ("YouTube videos and conference talks on Rust", Domain::Video),
            ("Background and history of the euro", Domain::Text),
            ("Lyon", Domain::General),
            // Whole words only: "newsletter" is not "news", "codex" is not "code".
            ("The newsletter of the codex society", Domain::General),
        ];
        for (text, want) in cases {
            assert_eq!(Domain::classify(text), want, "{text}");
        }
    }

    #[test]
    fn llm_assignments_are_read_tolerantly() {
        let got = parse_assignment(
            "Here you go:\n```json\n{\"1\": \"news\", \"3\": \"Video\", \"2\": \"poetry\", \"9\": \"text\"}\n```",
            3,
        );
        assert_eq!(got, vec![Some(Domain::News), None, Some(Domain::Video)]);
        assert_eq!(parse_assignment("no json", 2), vec![None, None]);
    }

    #[test]
    fn results_are_grouped_by_domain_and_deduplicated() {
        let plan = vec![
            Subtask::new("1", "Background of X").specialization("text"),
            Subtask::new("2", "Latest news on X").specialization("news"),
            Subtask::new("3", "Studies of X").specialization("academic"),
            Subtask::new("4", "More news on X").specialization("news"),
        ];
        let out = |i: usize, text: &str| -> Outcome {
            Ok(AgentOutput {
                subtask_id: i.to_string(),
                step: StepId::indexed("worker", i, 3),
                text: Arc::from(text),
                model: Arc::from("m"),
            })
        };
        let results = vec![
            out(1, "X began in 1990.\n\nShared fact."),
            out(2, "## Update\n\n- X merged with Y.\n- Shared fact!\n\nA new CEO."),
            out(3, "Two studies found Z."),
            out(4, "- x MERGED with y\n- Prices fell.\n\nSHARED FACT"),
        ];
        let text = group_and_dedupe(&plan, &results);
        let news = text.find("## News").unwrap();
        let academic = text.find("## Academic").unwrap();
        let background = text.find("## Text").unwrap();
        assert!(news < academic && academic < background, "{text}");
        assert_eq!(text.matches("merged with").count() + text.matches("MERGED with").count(), 1, "{text}");
        assert_eq!(text.to_lowercase().matches("shared fact").count(), 1, "{text}");
        assert!(text.contains("- Prices fell."));
        assert!(text.contains("### More news on X"));
        assert!(text.contains("\n#### Update\n"), "headings go two levels down: {text}");
        let given = Subtask::new("9", "Latest news on Z");
        assert_eq!(domain_of(&given), Domain::News, "`general`, the default, is classified");
    }

    #[tokio::test]
    async fn a_swarm_run_assigns_runs_and_groups() {
        let p = Arc::new(ScriptedProvider::new("t").reply_for(
            "decompose",
            r#"[{"description": "Latest news on bikes"}, {"description": "Studies of cycling safety"}, {"description": "Lyon"}]"#,
        ));
        let (r, _) = {
            let handle = run(Swarm::new(3, "t/m"), Task::new("Cycling in Lyon"), options(&p)).await.unwrap();
            (handle.result().await, ())
        };
        assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
        let domains: Vec<&str> = r.plan.iter().map(|s| s.specialization.as_str()).collect();
        assert_eq!(domains, ["news", "academic", "general"]);
        let text = r.final_output.unwrap();
        assert!(text.starts_with("## News\n\n### Latest news on bikes\n\nOutput of worker/001."), "{text}");
        assert_eq!(r.usage.calls, 4, "decompose and three workers: no synthesis call");
    }

    #[tokio::test]
    async fn the_llm_assigns_when_asked_and_keywords_fill_the_gaps() {
        let p = Arc::new(
            ScriptedProvider::new("t")
                .reply_for("decompose", r#"["Latest news on bikes", "Studies of cycling safety"]"#)
                .reply_for("swarm/assign", r#"{"1": "social"}"#),
        );
        let handle =
            run(Swarm::new(2, "t/m").assign(Assign::Llm), Task::new("Cycling"), options(&p)).await.unwrap();
        let r = handle.result().await;
        let domains: Vec<&str> = r.plan.iter().map(|s| s.specialization.as_str()).collect();
        assert_eq!(domains, ["social", "academic"]);
        assert_eq!(p.calls("swarm/assign"), 1);
    }
}

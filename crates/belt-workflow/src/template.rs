//! Prompt templates and conditions: minijinja over `inputs.*`, `context.*` and
//! `steps.<id>.output`.
//!
//! One environment for every workflow: undefined values are chainable (a skipped step's
//! `steps.x.output` renders as nothing and tests false, so templates can say
//! `{% if steps.x.output %}`), and every render or evaluation runs on a fuel budget, so a
//! hostile template (`{% for i in range(99999) %}{% for j in range(99999) %}…`) stops
//! with an error instead of spinning.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior, Value};

/// Instructions one render or evaluation may execute.
const FUEL: u64 = 2_000_000;

/// Global functions of the environment, which templates may call without declaring them.
const BUILTIN_FUNCTIONS: &[&str] = &["range", "dict", "namespace", "debug"];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_fuel(Some(FUEL));
        env
    })
}

/// What a template or expression can see.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// The run's context (`null` when it has none), read as `context.*`.
    pub context: serde_json::Value,
    /// Outputs of the steps done so far.
    pub steps: BTreeMap<String, String>,
    /// The draft, in a loop's `until`.
    pub output: Option<String>,
    /// The failure an `on_error` template reads as `error.message` and `error.kind`.
    pub error: Option<(String, String)>,
}

impl Scope {
    fn value(&self) -> Value {
        let steps: BTreeMap<&str, BTreeMap<&str, &str>> = self
            .steps
            .iter()
            .map(|(id, out)| (id.as_str(), BTreeMap::from([("output", out.as_str())])))
            .collect();
        let mut root = BTreeMap::new();
        root.insert("inputs", Value::from(Serde(&self.inputs)));
        root.insert("context", Value::from(Serde(&self.context)));
        root.insert("steps", Value::from(Serde(&steps)));
        if let Some(out) = &self.output {
            root.insert("output", Value::from(out.as_str()));
        }
        if let Some((message, kind)) = &self.error {
            let error = BTreeMap::from([("message", message.as_str()), ("kind", kind.as_str())]);
            root.insert("error", Value::from(Serde(&error)));
        }
        Value::from(Serde(&root))
    }
}

/// A template's or expression's syntax error, with its line within the text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxIssue {
    pub message: String,
    pub line: Option<usize>,
}

fn syntax_issue(e: &minijinja::Error) -> SyntaxIssue {
    SyntaxIssue { message: e.detail().unwrap_or("invalid template").to_string(), line: e.line() }
}

/// The variables a template uses (dotted: `inputs.topic`, `steps.triage.output`), or
/// its syntax error.
pub(crate) fn template_variables(source: &str) -> Result<Vec<String>, SyntaxIssue> {
    let t = env().template_from_str(source).map_err(|e| syntax_issue(&e))?;
    let mut vars: Vec<String> = t.undeclared_variables(true).into_iter().collect();
    vars.sort();
    Ok(vars)
}

/// The variables an expression uses, or its syntax error.
pub(crate) fn expression_variables(source: &str) -> Result<Vec<String>, SyntaxIssue> {
    let e = env().compile_expression(source).map_err(|e| syntax_issue(&e))?;
    let mut vars: Vec<String> = e.undeclared_variables(true).into_iter().collect();
    vars.sort();
    Ok(vars)
}

/// The filters (`| name`) and tests (`is name`, `is not name`) a template or expression
/// uses that the environment does not have, in order of first use. minijinja finds those
/// only when it reaches them while rendering, so a misspelled filter in a branch would pass
/// `belt validate` and fail the run; each name found is asked of the environment itself.
pub(crate) fn unknown_filters_and_tests(source: &str, expression: bool) -> Vec<String> {
    let mut unknown = Vec::new();
    for (kind, name) in filter_and_test_names(source, expression) {
        let probe = match kind {
            Use::Filter => format!("{{{{ none | {name} }}}}"),
            Use::Test => format!("{{{{ none is {name} }}}}"),
        };
        let missing = env().render_str(&probe, ()).err().is_some_and(|e| {
            matches!(e.kind(), minijinja::ErrorKind::UnknownFilter | minijinja::ErrorKind::UnknownTest)
        });
        let label = match kind {
            Use::Filter => format!("filter `{name}`"),
            Use::Test => format!("test `{name}`"),
        };
        if missing && !unknown.contains(&label) {
            unknown.push(label);
        }
    }
    unknown
}

#[derive(Clone, Copy)]
enum Use {
    Filter,
    Test,
}

/// Every `| name` and `is [not] name` in the template's `{{ }}` and `{% %}` (or in the whole
/// text of an expression), outside string literals.
fn filter_and_test_names(source: &str, expression: bool) -> Vec<(Use, String)> {
    let mut out = Vec::new();
    let mut code = Vec::new();
    if expression {
        code.push(source);
    } else {
        let mut rest = source;
        while let Some(open) = rest.find(['{']) {
            let after = &rest[open + 1..];
            let close = match after.as_bytes().first() {
                Some(b'{') => "}}",
                Some(b'%') => "%}",
                _ => {
                    rest = after;
                    continue;
                }
            };
            let body = &after[1..];
            let end = body.find(close).unwrap_or(body.len());
            code.push(&body[..end]);
            rest = &body[end..];
        }
    }
    for part in code {
        let words = words_outside_strings(part);
        let mut i = 0;
        while i < words.len() {
            match words[i].as_str() {
                "|" if i + 1 < words.len() && is_ident(&words[i + 1]) => {
                    out.push((Use::Filter, words[i + 1].clone()));
                    i += 1;
                }
                "is" => {
                    let at = if words.get(i + 1).map(String::as_str) == Some("not") { i + 2 } else { i + 1 };
                    if let Some(name) = words.get(at).filter(|w| is_ident(w)) {
                        out.push((Use::Test, name.clone()));
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
    out
}

fn is_ident(w: &str) -> bool {
    w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
}

/// Identifiers and `|` of an expression, with string literals left out.
fn words_outside_strings(code: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            '|' => words.push("|".to_string()),
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut w = String::from(c);
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' {
                        w.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                words.push(w);
            }
            _ => {}
        }
    }
    words
}

/// Whether a name is a function of the environment rather than a variable.
pub(crate) fn is_builtin(name: &str) -> bool {
    BUILTIN_FUNCTIONS.contains(&name)
}

/// Render a template.
pub(crate) fn render(source: &str, scope: &Scope) -> Result<String, String> {
    env().render_str(source, scope.value()).map_err(|e| describe(&e))
}

/// Evaluate a condition: true or false (an undefined value is false).
pub(crate) fn truth(source: &str, scope: &Scope) -> Result<bool, String> {
    let e = env().compile_expression(source).map_err(|e| describe(&e))?;
    e.eval(scope.value()).map(|v| v.is_true()).map_err(|e| describe(&e))
}

fn describe(e: &minijinja::Error) -> String {
    let at = e.line().map(|l| format!(" (line {l} of the template)")).unwrap_or_default();
    match e.detail() {
        Some(d) => format!("{}: {d}{at}", e.kind()),
        None => format!("{}{at}", e.kind()),
    }
}

/// Evaluate an arithmetic expression (the `calculator` tool): numbers, `+ - * / // % **`
/// and parentheses only — no names, calls or strings — on the same fuel budget.
pub(crate) fn arithmetic(source: &str) -> Result<String, String> {
    let source = source.trim();
    if source.is_empty() {
        return Err("the expression is empty; give one such as `(3 + 4) * 2`".into());
    }
    if let Some(c) = source.chars().find(|c| !(c.is_ascii_digit() || " \t.+-*/%()eE_".contains(*c))) {
        return Err(format!("`{c}`: only numbers, + - * / // % ** and parentheses are allowed"));
    }
    let e = env().compile_expression(source).map_err(|e| describe(&e))?;
    let v = e.eval(Value::UNDEFINED).map_err(|e| describe(&e))?;
    match v.kind() {
        minijinja::value::ValueKind::Number => Ok(v.to_string()),
        _ => Err(format!("`{source}` is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_of_templates_and_expressions() {
        let vars = template_variables(
            "Hi {{ inputs.topic }} {% for x in range(3) %}{{ x }}{% endfor %}{{ steps.a.output | upper }}",
        )
        .unwrap();
        assert_eq!(vars, ["inputs.topic", "range", "steps.a.output"]);
        assert_eq!(expression_variables("steps.t.output == 'billing'").unwrap(), ["steps.t.output"]);
        let e = template_variables("{{ inputs. }}").unwrap_err();
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn render_and_truth() {
        let mut scope = Scope::default();
        scope.inputs.insert("topic".into(), serde_json::json!("Rust"));
        scope.steps.insert("t".into(), "billing".into());
        assert_eq!(
            render("About {{ inputs.topic }}: {{ steps.t.output }}{{ steps.gone.output }}", &scope).unwrap(),
            "About Rust: billing"
        );
        assert!(truth("steps.t.output == 'billing'", &scope).unwrap());
        assert!(
            !truth("steps.gone.output == 'billing'", &scope).unwrap(),
            "a skipped step's output is undefined"
        );
        scope.output = Some("x".repeat(10));
        assert!(truth("output | length >= 10", &scope).unwrap());
    }

    #[test]
    fn a_runaway_template_runs_out_of_fuel() {
        let err = render(
            "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
            &Scope::default(),
        )
        .unwrap_err();
        assert!(err.contains("fuel"), "{err}");
    }
}

//! Renders knowledge with minijinja templates (in `templates/`): Markdown for people and
//! LLMs, HTML pages for the report. Templates escape HTML; nothing is built by string
//! concatenation.

use minijinja::{Environment, Value as J, context};
use vsum_engine::stage::StageError;

use super::model::Summary;
use super::text::clock;

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    env.add_template("summary.md", include_str!("templates/summary.md.j2"))
        .expect("summary.md template");
    env.add_template("summary.html", include_str!("templates/summary.html.j2"))
        .expect("summary.html template");
    env.add_template("index.md", include_str!("templates/index.md.j2"))
        .expect("index.md template");
    env.add_template("index.html", include_str!("templates/index.html.j2"))
        .expect("index.html template");
    env.add_template("style.css", include_str!("templates/style.css"))
        .expect("style template");
    env.add_filter("clock", |v: Option<f64>| {
        v.map(clock).unwrap_or_else(|| "?".into())
    });
    env.add_filter("short", |s: String, n: usize| {
        s.chars().take(n).collect::<String>()
    });
    env.add_filter("tojson_script", |v: J| -> Result<J, minijinja::Error> {
        // JSON that is safe inside <script> as it is (so marked safe, not HTML-escaped):
        // no `<`, `>` or `&` survive, so no closing tag or comment can appear.
        let s = serde_json::to_string(&v).map_err(|e| {
            minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
        })?;
        Ok(J::from_safe_string(
            s.replace('<', "\\u003c")
                .replace('>', "\\u003e")
                .replace('&', "\\u0026"),
        ))
    });
    env
}

fn render(name: &str, ctx: J) -> Result<String, StageError> {
    env()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| StageError::fatal(format!("rendering {name}: {e:#}")))
}

pub fn summary_md(s: &Summary) -> Result<String, StageError> {
    render("summary.md", context! { s => s })
}

/// `source_href`: the source video relative to the page (for the player), if known;
/// `library_href`: the library page (`index.html`) relative to the page. The player's
/// poster is the first chapter keyframe.
pub fn summary_html(
    s: &Summary,
    source_href: Option<&str>,
    library_href: Option<&str>,
) -> Result<String, StageError> {
    let poster = s.chapters.iter().find_map(|c| c.keyframe.as_deref());
    render(
        "summary.html",
        context! { s => s, source_href => source_href, library_href => library_href, poster => poster },
    )
}

pub fn index_md(ctx: J) -> Result<String, StageError> {
    render("index.md", ctx)
}

pub fn index_html(ctx: J) -> Result<String, StageError> {
    render("index.html", ctx)
}

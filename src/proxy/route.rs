//! Routes: which (method, path template) maps to which upstream, action and resource.
//!
//! Pure: no I/O. Built once per config by [`RouteTable::build`] (conflicts are config errors),
//! matched per request with `matchit`. A placeholder's value fills the resource as data: the
//! proxy's canonical path check has already refused anything ambiguous in it.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

/// Whether a route's denials are enforced or only audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Denied requests are refused (default).
    Enforce,
    /// Shadow mode: would-be denials are audited and the request is forwarded anyway.
    Monitor,
}

/// One piece of a resource template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// Index into the route's placeholder names.
    Param(usize),
}

/// A resource template such as `api://crm/customers/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceTemplate {
    parts: Vec<Part>,
    source: String,
}

impl ResourceTemplate {
    /// Parses `template` against the placeholder names of the route's path.
    pub fn parse(template: &str, params: &[String]) -> Result<ResourceTemplate, String> {
        if template.is_empty() {
            return Err("must not be empty, e.g. api://crm/customers/{id}".into());
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let literal = &rest[..open];
            check_literal(literal)?;
            if !literal.is_empty() {
                parts.push(Part::Literal(literal.to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in {template:?}"))?;
            let name = &rest[open + 1..open + close];
            let index = params.iter().position(|p| p == name).ok_or_else(|| {
                if params.is_empty() {
                    format!("unknown placeholder {{{name}}}: the route's path has no placeholders")
                } else {
                    format!(
                        "unknown placeholder {{{name}}}; the path has {}",
                        params
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            })?;
            parts.push(Part::Param(index));
            rest = &rest[open + close + 1..];
        }
        check_literal(rest)?;
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(ResourceTemplate {
            parts,
            source: template.to_string(),
        })
    }

    /// Parses a template whose placeholders are whatever names it holds (an MCP tool's
    /// resource, filled from the call's arguments); returns it and the names in order of
    /// first appearance. A name is letters, digits and `_`.
    pub fn parse_free(template: &str) -> Result<(ResourceTemplate, Vec<String>), String> {
        let mut names: Vec<String> = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in {template:?}"))?;
            let name = &rest[open + 1..open + close];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "placeholder {{{name}}}: a placeholder names a top-level argument: letters, digits and `_`"
                ));
            }
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
            rest = &rest[open + close + 1..];
        }
        let t = ResourceTemplate::parse(template, &names)?;
        Ok((t, names))
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the template has no placeholder.
    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it has no placeholder.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// A regex (bytes, anchored) of every resource the template can produce: its literal
    /// text, and for each placeholder one or more bytes other than `/`, `*`, `?`, `[`, `]`,
    /// `{`, `}`, `\\` and control characters (what a value may hold).
    pub fn regex(&self) -> String {
        let mut out = String::from("^");
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(&regex_syntax::escape(s)),
                Part::Param(_) => out.push_str(VALUE_CLASS),
            }
        }
        out.push('$');
        out
    }

    /// Fills the template with placeholder values, in the route's placeholder order.
    pub fn render(&self, values: &[&str]) -> String {
        let mut out = String::with_capacity(self.source.len() + 16);
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Param(i) => out.push_str(values.get(*i).copied().unwrap_or_default()),
            }
        }
        out
    }
}

/// The bytes a placeholder value may hold, as a regex class (at least one).
const VALUE_CLASS: &str = r"[^/%*?\[\]{}\\\x00-\x1f\x7f]+";

/// Whether an MCP argument may fill a placeholder: non-empty, not `.` or `..`, and none of
/// `/`, `%`, `*`, `?`, `[`, `]`, `{`, `}`, `\` or a control character — it is data, and must
/// not read as a path, an escape or a glob wherever the server puts it.
pub fn is_placeholder_value(v: &str) -> bool {
    !v.is_empty()
        && v != "."
        && v != ".."
        && !v.chars().any(|c| {
            matches!(c, '/' | '%' | '*' | '?' | '[' | ']' | '{' | '}' | '\\') || c.is_control()
        })
}

fn check_literal(s: &str) -> Result<(), String> {
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') || c.is_control())
    {
        return Err(format!(
            "{c:?} is not allowed in a resource template outside a {{placeholder}}: a resource is data, not a pattern"
        ));
    }
    Ok(())
}

/// Parses a path template (`/crm/customers/{id}`, `/files/{*path}`) and returns its
/// placeholder names in order.
pub fn parse_path_template(path: &str) -> Result<Vec<String>, String> {
    if !path.starts_with('/') {
        return Err("must start with `/`".into());
    }
    let mut params: Vec<String> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i == segments.len() - 1;
        if segment.is_empty() && !last {
            return Err("empty segment (`//`) in path".into());
        }
        if *segment == "." || *segment == ".." {
            return Err("`.` and `..` segments are not allowed".into());
        }
        if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (catch_all, name) = match inner.strip_prefix('*') {
                Some(n) => (true, n),
                None => (false, inner),
            };
            if catch_all && !last {
                return Err(format!("catch-all {{*{name}}} must be the last segment"));
            }
            if !is_param_name(name) {
                return Err(format!(
                    "placeholder {{{name}}}: a name is letters, digits and `_`, not starting with a digit"
                ));
            }
            if params.iter().any(|p| p == name) {
                return Err(format!("placeholder {{{name}}} appears twice"));
            }
            params.push(name.to_string());
        } else if let Some(b) = segment.bytes().find(|b| !is_path_literal_byte(*b)) {
            return Err(format!(
                "{:?} is not allowed in a path template; a placeholder is a whole segment like {{id}}",
                b as char
            ));
        }
    }
    Ok(params)
}

fn is_param_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Bytes allowed literally in a path template segment (RFC 3986 `pchar` minus `%`, `;`).
fn is_path_literal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b)
}

/// Where a route's row count comes from, for `maxRows`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowSource {
    /// A query parameter carries it; when absent, actgate sets it to the policy's limit.
    Query(String),
    /// The route returns at most this many rows (e.g. 1 for a single object).
    Fixed(u64),
}

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique name; a metric label.
    pub name: Arc<str>,
    /// The one method it answers.
    pub method: Method,
    /// The path template as written.
    pub path: String,
    /// Placeholder names, in path order.
    pub params: Vec<String>,
    /// Name of the upstream it forwards to.
    pub upstream: String,
    /// The action it performs.
    pub action: Arc<str>,
    /// How the resource is built from the path.
    pub resource: ResourceTemplate,
    /// Where the row count comes from, for `maxRows`; `None` means the route cannot say, and
    /// a `maxRows` policy does not hold on it.
    pub rows: Option<RowSource>,
    /// JSON pointers to recipient fields of the body, for `allowedDomains`.
    pub recipients: Vec<String>,
    /// The field names those pointers end in (`to`, `cc`), refused in the query string.
    pub recipient_fields: Vec<String>,
    /// Enforce or monitor.
    pub mode: Mode,
    /// The token's agent must match the client certificate's identity.
    pub sender_constrained: bool,
}

/// Every route, indexed by method then path.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    by_method: HashMap<Method, matchit::Router<usize>>,
}

/// A matched route and its placeholder values, in the route's order.
#[derive(Debug)]
pub struct RouteMatch<'t, 'p> {
    /// The route.
    pub route: &'t Route,
    /// Placeholder values, borrowed from the request path.
    pub values: Vec<&'p str>,
}

impl RouteTable {
    /// Builds the table. An error names the route that conflicts with an earlier one.
    pub fn build(routes: Vec<Route>) -> Result<RouteTable, (usize, String)> {
        let mut by_method: HashMap<Method, matchit::Router<usize>> = HashMap::new();
        for (i, route) in routes.iter().enumerate() {
            by_method
                .entry(route.method.clone())
                .or_default()
                .insert(route.path.clone(), i)
                .map_err(|e| {
                    (
                        i,
                        format!(
                            "{} {} conflicts with another route: {e}",
                            route.method, route.path
                        ),
                    )
                })?;
        }
        Ok(RouteTable { routes, by_method })
    }

    /// Every route, in config order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the route for a method and a canonical, decoded path.
    pub fn find<'t, 'p>(&'t self, method: &Method, path: &'p str) -> Option<RouteMatch<'t, 'p>> {
        let router = self.by_method.get(method)?;
        let m = router.at(path).ok()?;
        let route = &self.routes[*m.value];
        let values = route
            .params
            .iter()
            .map(|name| m.params.get(name).unwrap_or_default())
            .collect();
        Some(RouteMatch { route, values })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, method: Method, path: &str, resource: &str) -> Route {
        let params = parse_path_template(path).unwrap();
        Route {
            name: name.into(),
            method,
            path: path.into(),
            resource: ResourceTemplate::parse(resource, &params).unwrap(),
            params,
            upstream: "crm".into(),
            action: "read".into(),
            rows: None,
            recipients: vec![],
            recipient_fields: vec![],
            mode: Mode::Enforce,
            sender_constrained: false,
        }
    }

    #[test]
    fn templates_fill_resources_from_the_path() {
        let table = RouteTable::build(vec![
            route(
                "one",
                Method::GET,
                "/crm/customers/{id}",
                "api://crm/customers/{id}",
            ),
            route("all", Method::GET, "/crm/customers", "api://crm/customers"),
            route("files", Method::GET, "/files/{*path}", "api://files/{path}"),
        ])
        .unwrap();
        let m = table.find(&Method::GET, "/crm/customers/42").unwrap();
        assert_eq!(&*m.route.name, "one");
        assert_eq!(m.route.resource.render(&m.values), "api://crm/customers/42");
        let m = table.find(&Method::GET, "/files/a/b").unwrap();
        assert_eq!(m.route.resource.render(&m.values), "api://files/a/b");
        assert!(table.find(&Method::POST, "/crm/customers/42").is_none());
        assert!(
            table
                .find(&Method::GET, "/crm/customers/42/notes")
                .is_none()
        );
    }

    #[test]
    fn conflicts_and_bad_templates_are_errors() {
        let err = RouteTable::build(vec![
            route("a", Method::GET, "/x/{id}", "api://x/{id}"),
            route("b", Method::GET, "/x/{other}", "api://x/{other}"),
        ])
        .unwrap_err();
        assert_eq!(err.0, 1);
        assert!(parse_path_template("x").is_err());
        assert!(parse_path_template("/a//b").is_err());
        assert!(parse_path_template("/a/../b").is_err());
        assert!(parse_path_template("/a/{*r}/b").is_err());
        assert!(parse_path_template("/a/{id}/{id}").is_err());
        assert!(parse_path_template("/a/b;c").is_err());
        assert!(parse_path_template("/a/b%2f").is_err());
        let params = vec!["id".to_string()];
        assert!(
            ResourceTemplate::parse("api://x/{cid}", &params)
                .unwrap_err()
                .contains("unknown placeholder {cid}")
        );
        assert!(ResourceTemplate::parse("api://x/*", &params).is_err());
        assert!(ResourceTemplate::parse("api://x/{id", &params).is_err());
    }
}

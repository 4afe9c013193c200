//! What the long lists' commands take (`job list`, `pipeline list`): a page and filters,
//! sent as `?limit=&cursor=&name=&status=`; the next page's cursor goes to stderr.

use clap::Args;
use serde::de::DeserializeOwned;

use super::client::Client;
use super::commands::seg;

/// A page of a list and its filters.
#[derive(Debug, Args, Default)]
pub struct ListArgs {
    /// Only entries whose name contains this (ignoring case).
    #[arg(long)]
    pub name: Option<String>,
    /// Only entries in this status (jobs and pipelines: of their newest run, or `never`).
    #[arg(long)]
    pub status: Option<String>,
    /// At most this many entries (1 to 10000); the next page's `--cursor` is printed.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Start at this ID (from a previous page).
    #[arg(long)]
    pub cursor: Option<String>,
}

impl ListArgs {
    /// `path` with these arguments as its query.
    pub fn path(&self, path: &str) -> String {
        let params = [
            ("name", self.name.clone()),
            ("status", self.status.clone()),
            ("limit", self.limit.map(|l| l.to_string())),
            ("cursor", self.cursor.clone()),
        ];
        let query: Vec<String> = params
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", seg(v))))
            .collect();
        if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", query.join("&"))
        }
    }

    /// Fetches the page, telling on stderr where the next one starts.
    pub async fn fetch<T: DeserializeOwned>(
        &self,
        client: &Client,
        path: &str,
    ) -> anyhow::Result<Vec<T>> {
        let (items, next) = client.get_page(&self.path(path)).await?;
        if let Some(next) = next {
            eprintln!("more: --cursor {next}");
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_given_arguments_reach_the_query() {
        assert_eq!(ListArgs::default().path("/v1/jobs"), "/v1/jobs");
        let a = ListArgs {
            name: Some("back up".into()),
            limit: Some(10),
            ..Default::default()
        };
        assert_eq!(a.path("/v1/jobs"), "/v1/jobs?name=back%20up&limit=10");
    }
}

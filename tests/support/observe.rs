//! Reading what the proxy reports: access-log lines from a file, metrics from the admin
//! listener.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::within;

/// Waits until the access log at `path` holds at least `count` complete lines, and returns
/// them all. Entries are written when a response ends, which can be just after the client has
/// read it, so the file is polled (every wait bounded by [`super::WAIT`]).
pub async fn log_lines(path: &Path, count: usize) -> Vec<String> {
    within(async {
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let complete: Vec<String> = text
                .split_inclusive('\n')
                .filter(|line| line.ends_with('\n'))
                .map(|line| line.trim_end().to_owned())
                .collect();
            if complete.len() >= count {
                return complete;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// The `key=value` fields of a text access-log line (those after the combined-log part, from
/// `id=` on), with double-quoted values unquoted.
pub fn text_fields(line: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let Some(at) = line.find(" id=") else { return fields };
    let mut rest = &line[at + 1..];
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_owned();
        let after = &rest[eq + 1..];
        let (value, remaining) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').unwrap_or(quoted.len());
                (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
            }
            None => {
                let end = after.find(' ').unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        fields.insert(key, value.to_owned());
        rest = remaining.trim_start();
    }
    fields
}

/// The combined-log part of a text access-log line: client, request line, status, bytes.
pub fn request_line(line: &str) -> (String, String, u16) {
    let client = line.split(' ').next().unwrap().to_owned();
    let quoted = line.split('"').nth(1).unwrap().to_owned();
    let status = line.split('"').nth(2).unwrap().split_whitespace().next().unwrap();
    (client, quoted, status.parse().unwrap())
}

/// Fetches `/metrics` from an admin listener and returns every sample line, keyed by the
/// series as written (`name{labels}`), with its value.
pub async fn scrape(admin_url: &str) -> BTreeMap<String, f64> {
    let text = within(reqwest::get(admin_url)).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Scrapes `/metrics` from `admin_url` until `done` holds for the samples (entries are
/// recorded when a response ends, which can be just after the client has read it), and
/// returns them; bounded by [`within`].
pub async fn scrape_until(
    admin_url: &str,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    within(async {
        loop {
            let samples = scrape(admin_url).await;
            if done(&samples) {
                return samples;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// The value of one series, or 0 when it has not been created yet.
pub fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

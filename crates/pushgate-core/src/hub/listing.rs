//! Listing the channels that have subscribers (`GET /api/channels`): a
//! page of at most `limit`, by name after a given one or the busiest
//! first. Memory per request is bounded by the page (a heap of `limit`
//! entries), whatever the number of channels; time is one pass over the
//! channel table, which the node holds anyway.
//!
//! In a cluster every node answers its own page and [`merge`] sums them.
//! By name the merged page is exact: each of the first `limit` names
//! after `after` in the cluster is among the first `limit` of every node
//! that has it. The busiest merged page sums each node's busiest `limit`,
//! which is exact for every channel in each of its nodes' pages (a channel
//! in the cluster's top `limit` almost always is).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use serde::{Deserialize, Serialize};

use crate::auth::Pattern;
use crate::channel::ChannelName;
use crate::error::Error;

/// Most channels one page lists.
pub const MAX_LIMIT: usize = 1000;

/// The order of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// By name (bytewise), after `after`; pages follow one another.
    Name,
    /// Most subscribers first (ties by name); one page, no `after`.
    Busiest,
}

/// Which channels to list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelQuery {
    /// A token pattern (`chat:*`, or an exact name); `None`: every channel.
    pattern: Option<String>,
    /// By name: only names after this one.
    after: Option<String>,
    limit: usize,
    order: Order,
}

impl ChannelQuery {
    /// A query; a pattern that is no token pattern, a `limit` outside
    /// 1..=[`MAX_LIMIT`], or `after` with `busiest` is a `bad_request`.
    pub fn new(
        pattern: Option<&str>,
        after: Option<&str>,
        limit: usize,
        order: Order,
    ) -> Result<Self, Error> {
        if let Some(p) = pattern {
            Pattern::new(p).map_err(|e| {
                Error::bad_request(format!(
                    "pattern: {} (a channel name, or a prefix ending in *: chat:*)",
                    e.message()
                ))
            })?;
        }
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::bad_request(format!(
                "limit must be a number from 1 to {MAX_LIMIT}"
            )));
        }
        if after.is_some() && order == Order::Busiest {
            return Err(Error::bad_request(
                "after pages by name: it does not go with order=busiest",
            ));
        }
        Ok(ChannelQuery {
            pattern: pattern.map(str::to_owned),
            after: after.map(str::to_owned),
            limit,
            order,
        })
    }

    /// Most channels the page lists.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The page's order.
    pub fn order(&self) -> Order {
        self.order
    }

    /// A picker of the matching channels, holding at most `limit`.
    pub(super) fn picker(&self) -> Picker<'_> {
        Picker {
            query: self,
            // Checked in `new`; an unparsable one (from another node) matches nothing.
            pattern: self.pattern.as_deref().map(Pattern::new),
            by_name: BinaryHeap::new(),
            busiest: BinaryHeap::new(),
            more: false,
        }
    }
}

/// A page of channels with their subscriber counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelPage {
    /// In the query's order.
    pub channels: Vec<(ChannelName, u64)>,
    /// Whether more channels follow the last (by name only).
    pub more: bool,
}

impl ChannelPage {
    /// As a node answers a survey: `{"channels":[[name,n],…],"more":b}`.
    pub fn to_json(&self) -> serde_json::Value {
        let channels: Vec<_> = self
            .channels
            .iter()
            .map(|(c, n)| serde_json::json!([c.as_str(), n]))
            .collect();
        serde_json::json!({"channels": channels, "more": self.more})
    }

    /// A node's answer back; `None` when it is no page.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let channels = v["channels"]
            .as_array()?
            .iter()
            .map(|e| Some((ChannelName::new(e[0].as_str()?).ok()?, e[1].as_u64()?)))
            .collect::<Option<_>>()?;
        Some(ChannelPage {
            channels,
            more: v["more"].as_bool()?,
        })
    }

    /// Where the next page starts (`after`), when more follow.
    pub fn next(&self) -> Option<&ChannelName> {
        match self.more {
            true => self.channels.last().map(|(c, _)| c),
            false => None,
        }
    }
}

/// Keeps the best `limit` channels offered.
pub(super) struct Picker<'a> {
    query: &'a ChannelQuery,
    pattern: Option<Result<Pattern, Error>>,
    /// By name: the smallest names, largest on top (to be displaced).
    by_name: BinaryHeap<ChannelName>,
    /// Busiest: the largest counts, smallest on top.
    busiest: BinaryHeap<Reverse<(u64, Reverse<ChannelName>)>>,
    more: bool,
}

impl Picker<'_> {
    /// Whether `channel` is one the query may list (before its count is read).
    pub(super) fn wants(&self, channel: &ChannelName) -> bool {
        let matches = match &self.pattern {
            None => true,
            Some(Ok(p)) => p.matches(channel.as_str()),
            Some(Err(_)) => false,
        };
        matches
            && self
                .query
                .after
                .as_deref()
                .is_none_or(|a| channel.as_str() > a)
    }

    /// Offers a wanted channel with `count` subscribers (none: not listed).
    pub(super) fn offer(&mut self, channel: &ChannelName, count: u64) {
        if count == 0 {
            return;
        }
        let limit = self.query.limit;
        match self.query.order {
            Order::Name => {
                if self.by_name.len() < limit {
                    self.by_name.push(channel.clone());
                } else if self.by_name.peek().is_some_and(|top| channel < top) {
                    self.by_name.pop();
                    self.by_name.push(channel.clone());
                    self.more = true;
                } else {
                    self.more = true;
                }
            }
            Order::Busiest => {
                let entry = Reverse((count, Reverse(channel.clone())));
                if self.busiest.len() < limit {
                    self.busiest.push(entry);
                } else if self.busiest.peek().is_some_and(|top| entry < *top) {
                    self.busiest.pop();
                    self.busiest.push(entry);
                }
            }
        }
    }

    /// The page; by name the counts are read again for the names kept.
    pub(super) fn finish(self, count: impl Fn(&ChannelName) -> u64) -> ChannelPage {
        let channels = match self.query.order {
            Order::Name => {
                let mut names = self.by_name.into_vec();
                names.sort_unstable();
                names
                    .into_iter()
                    .map(|c| {
                        let n = count(&c);
                        (c, n)
                    })
                    .collect()
            }
            Order::Busiest => {
                let mut all: Vec<_> = self.busiest.into_iter().map(|Reverse(e)| e).collect();
                all.sort_unstable_by(|a, b| b.cmp(a));
                all.into_iter().map(|(n, Reverse(c))| (c, n)).collect()
            }
        };
        ChannelPage {
            channels,
            more: self.more,
        }
    }
}

/// One page of the cluster from every node's page: counts summed.
pub fn merge(query: &ChannelQuery, pages: impl IntoIterator<Item = ChannelPage>) -> ChannelPage {
    let mut sums: BTreeMap<ChannelName, u64> = BTreeMap::new();
    let mut more = false;
    for page in pages {
        more |= page.more;
        for (channel, n) in page.channels {
            *sums.entry(channel).or_default() += n;
        }
    }
    let mut picker = query.picker();
    for (channel, n) in &sums {
        if picker.wants(channel) {
            picker.offer(channel, *n);
        }
    }
    let mut page = picker.finish(|c| sums.get(c).copied().unwrap_or(0));
    page.more |= more && query.order == Order::Name;
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> ChannelName {
        ChannelName::new(s).unwrap()
    }

    fn pick(query: &ChannelQuery, table: &[(&str, u64)]) -> ChannelPage {
        let mut p = query.picker();
        for (name, n) in table {
            if p.wants(&ch(name)) {
                p.offer(&ch(name), *n);
            }
        }
        p.finish(|c| {
            table
                .iter()
                .find(|(n, _)| *n == c.as_str())
                .map_or(0, |(_, n)| *n)
        })
    }

    fn names(page: &ChannelPage) -> Vec<(&str, u64)> {
        page.channels
            .iter()
            .map(|(c, n)| (c.as_str(), *n))
            .collect()
    }

    const TABLE: &[(&str, u64)] = &[
        ("chat:b", 3),
        ("news", 9),
        ("chat:a", 1),
        ("empty", 0),
        ("chat:c", 3),
        ("chat", 2),
    ];

    #[test]
    fn pages_by_name_follow_one_another_and_skip_empty_channels() {
        let q = ChannelQuery::new(None, None, 2, Order::Name).unwrap();
        let page = pick(&q, TABLE);
        assert_eq!(names(&page), [("chat", 2), ("chat:a", 1)]);
        assert_eq!(page.next().map(ChannelName::as_str), Some("chat:a"));
        let q = ChannelQuery::new(None, Some("chat:a"), 2, Order::Name).unwrap();
        let page = pick(&q, TABLE);
        assert_eq!(names(&page), [("chat:b", 3), ("chat:c", 3)]);
        let q = ChannelQuery::new(None, Some("chat:c"), 2, Order::Name).unwrap();
        let page = pick(&q, TABLE);
        assert_eq!(names(&page), [("news", 9)], "empty is not listed");
        assert_eq!(page.next(), None);
    }

    #[test]
    fn a_pattern_filters_as_in_tokens() {
        let q = ChannelQuery::new(Some("chat:*"), None, 10, Order::Name).unwrap();
        assert_eq!(
            names(&pick(&q, TABLE)),
            [("chat:a", 1), ("chat:b", 3), ("chat:c", 3)]
        );
        let q = ChannelQuery::new(Some("news"), None, 10, Order::Name).unwrap();
        assert_eq!(names(&pick(&q, TABLE)), [("news", 9)]);
    }

    #[test]
    fn busiest_first_ties_by_name_without_next() {
        let q = ChannelQuery::new(None, None, 3, Order::Busiest).unwrap();
        let page = pick(&q, TABLE);
        assert_eq!(names(&page), [("news", 9), ("chat:b", 3), ("chat:c", 3)]);
        assert_eq!(page.next(), None);
    }

    #[test]
    fn bad_queries_are_refused_clearly() {
        let e = ChannelQuery::new(Some(""), None, 10, Order::Name).unwrap_err();
        assert!(e.message().starts_with("pattern:"), "{e}");
        let too_long = "a".repeat(1000);
        assert!(ChannelQuery::new(Some(&too_long), None, 10, Order::Name).is_err());
        for limit in [0, MAX_LIMIT + 1] {
            let e = ChannelQuery::new(None, None, limit, Order::Name).unwrap_err();
            assert!(e.message().contains("limit"), "{e}");
        }
        assert!(ChannelQuery::new(None, Some("a"), 10, Order::Busiest).is_err());
    }

    #[test]
    fn pages_of_nodes_merge_into_the_clusters_page() {
        // Node 1 and node 2 each answer their first two after "a".
        let q = ChannelQuery::new(None, Some("a"), 2, Order::Name).unwrap();
        let one = pick(&q, &[("b", 1), ("c", 2), ("d", 1)]);
        let two = pick(&q, &[("c", 5), ("e", 1)]);
        let page = merge(&q, [one, two]);
        assert_eq!(names(&page), [("b", 1), ("c", 7)]);
        assert_eq!(page.next().map(ChannelName::as_str), Some("c"));
        let q = ChannelQuery::new(None, None, 2, Order::Busiest).unwrap();
        let one = pick(&q, &[("b", 4), ("c", 2)]);
        let two = pick(&q, &[("c", 5), ("e", 1)]);
        let page = merge(&q, [one, two]);
        assert_eq!(names(&page), [("c", 7), ("b", 4)]);
        assert!(!page.more);
    }
}

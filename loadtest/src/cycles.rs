//! Cycles in a dependency graph whose edges carry a mask of kinds: strongly connected
//! components (Tarjan's algorithm, iterative so a long history cannot overflow the stack) and
//! the shortest cycle inside one (breadth-first search), both over the edges a mask allows.

use std::collections::VecDeque;

/// A directed graph over nodes `0..n`; each edge carries a bit mask of its kinds.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// Outgoing edges of each node: (target, mask).
    pub adj: Vec<Vec<(usize, u8)>>,
}

/// How many start nodes the shortest-cycle search tries in one component; a large component
/// still yields a cycle, possibly not the very shortest.
const MAX_BFS_STARTS: usize = 64;

impl Graph {
    /// A graph of `n` nodes and no edges.
    pub fn new(n: usize) -> Graph {
        Graph {
            adj: vec![Vec::new(); n],
        }
    }

    /// Adds the kinds in `mask` to the edge `from → to`.
    pub fn add(&mut self, from: usize, to: usize, mask: u8) {
        if let Some(edge) = self.adj[from].iter_mut().find(|(t, _)| *t == to) {
            edge.1 |= mask;
        } else {
            self.adj[from].push((to, mask));
        }
    }

    /// The kinds of the edge `from → to` (0: none).
    pub fn mask(&self, from: usize, to: usize) -> u8 {
        self.adj[from]
            .iter()
            .find(|(t, _)| *t == to)
            .map_or(0, |(_, m)| *m)
    }

    /// The strongly connected components with more than one node, over edges with a kind in
    /// `allowed`, among `nodes` (sorted; `None`: every node).
    pub fn components(&self, allowed: u8, nodes: Option<&[usize]>) -> Vec<Vec<usize>> {
        let n = self.adj.len();
        let within = |v: usize| nodes.is_none_or(|ns| ns.binary_search(&v).is_ok());
        let all: Vec<usize>;
        let roots = match nodes {
            Some(ns) => ns,
            None => {
                all = (0..n).collect();
                &all
            }
        };
        const UNSEEN: usize = usize::MAX;
        let mut index = vec![UNSEEN; n];
        let mut low = vec![0usize; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut next = 0usize;
        let mut out = Vec::new();
        // Frames of the depth-first search: (node, position in its adjacency list).
        let mut frames: Vec<(usize, usize)> = Vec::new();
        for &root in roots {
            if index[root] != UNSEEN || !within(root) {
                continue;
            }
            frames.push((root, 0));
            index[root] = next;
            low[root] = next;
            next += 1;
            stack.push(root);
            on_stack[root] = true;
            while let Some(&(v, from)) = frames.last() {
                let edges = &self.adj[v];
                let mut pos = from;
                let mut child = None;
                while pos < edges.len() {
                    let (w, mask) = edges[pos];
                    pos += 1;
                    if mask & allowed == 0 || !within(w) {
                        continue;
                    }
                    if index[w] == UNSEEN {
                        child = Some(w);
                        break;
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                }
                if let Some(top) = frames.last_mut() {
                    top.1 = pos;
                }
                if let Some(w) = child {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    frames.push((w, 0));
                    continue;
                }
                frames.pop();
                if let Some(&(parent, _)) = frames.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut component = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        component.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.sort_unstable();
                        out.push(component);
                    }
                }
            }
        }
        out
    }

    /// A shortest cycle through the nodes of `component` (sorted), over edges with a kind in
    /// `allowed`: the nodes in order, the first repeated implicitly at the end.
    pub fn shortest_cycle(&self, component: &[usize], allowed: u8) -> Option<Vec<usize>> {
        let inside = |v: usize| component.binary_search(&v).is_ok();
        let mut best: Option<Vec<usize>> = None;
        for &start in component.iter().take(MAX_BFS_STARTS) {
            // Breadth-first from `start` until an edge leads back to it.
            let mut parent: std::collections::HashMap<usize, usize> =
                std::collections::HashMap::new();
            let mut queue = VecDeque::from([start]);
            let mut found = None;
            'search: while let Some(v) = queue.pop_front() {
                for &(w, mask) in &self.adj[v] {
                    if mask & allowed == 0 || !inside(w) {
                        continue;
                    }
                    if w == start {
                        found = Some(v);
                        break 'search;
                    }
                    if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(w) {
                        e.insert(v);
                        queue.push_back(w);
                    }
                }
            }
            let Some(mut v) = found else { continue };
            let mut path = vec![v];
            while v != start {
                v = parent[&v];
                path.push(v);
            }
            path.reverse();
            if best.as_ref().is_none_or(|b| path.len() < b.len()) {
                best = Some(path);
            }
            if best.as_ref().is_some_and(|b| b.len() == 2) {
                break;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_components_and_the_shortest_cycle_over_allowed_edges() {
        // 0 → 1 → 2 → 3 → 0 (kind 1) and a shortcut 2 → 0 (kind 2); 4 alone; 5 ⇄ 6 (kind 2).
        let mut g = Graph::new(7);
        g.add(0, 1, 1);
        g.add(1, 2, 1);
        g.add(2, 3, 1);
        g.add(3, 0, 1);
        g.add(2, 0, 2);
        g.add(3, 4, 1);
        g.add(5, 6, 2);
        g.add(6, 5, 2);
        let mut all = g.components(3, None);
        all.sort();
        assert_eq!(all, vec![vec![0, 1, 2, 3], vec![5, 6]]);
        let ones = g.components(1, None);
        assert_eq!(ones, vec![vec![0, 1, 2, 3]]);
        assert_eq!(g.shortest_cycle(&[0, 1, 2, 3], 1).map(|c| c.len()), Some(4));
        assert_eq!(g.shortest_cycle(&[0, 1, 2, 3], 3).map(|c| c.len()), Some(3));
        assert_eq!(
            g.components(1, Some(&[0, 1, 2, 4, 5, 6])),
            Vec::<Vec<usize>>::new()
        );
        assert_eq!(g.mask(2, 0), 2);
    }
}

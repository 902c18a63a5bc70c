//! Control requests whose answer takes longer than one control round: questions to every
//! worker (`show affinity`, `affinity flush`) and reloads (which wait for the workers to
//! prepare). The control thread never waits for a worker: it asks, goes on with its rounds
//! (VRRP adverts keep their interval), and collects the answers as they come; the control
//! socket delivers the reply then ([`crate::ctlsock::Answer::Later`]).

use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use super::api::{WorkerQuery, WorkerQueryError};
use crate::ctlsock::{Reply, Ticket};

/// How long the workers have to answer a question (or to prepare a reload).
pub const WORKER_TIMEOUT: Duration = Duration::from_millis(500);
/// How long they have to list their tables (`show affinity` without a client): a bounded slice
/// of the table per loop pass, so a large sparse table takes many passes.
pub const LISTING_TIMEOUT: Duration = Duration::from_secs(5);

/// The answers of every worker to one question, as they arrive.
pub struct Gather<T> {
    answers: Vec<Option<Receiver<T>>>,
    got: Vec<Option<T>>,
    deadline: Instant,
}

impl<T> Gather<T> {
    /// Asks every worker the question `make` builds around a reply channel. A worker that has
    /// not taken its previous question yet makes this one fail at once (nothing is waited for).
    pub fn ask(
        queries: &[Sender<WorkerQuery>],
        now: Instant,
        make: impl Fn(Sender<T>) -> WorkerQuery,
    ) -> Result<Gather<T>, WorkerQueryError> {
        let mut answers = Vec::with_capacity(queries.len());
        for (worker, q) in queries.iter().enumerate() {
            let (tx, rx) = bounded(1);
            match q.try_send(make(tx)) {
                Ok(()) => answers.push(Some(rx)),
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    return Err(WorkerQueryError::Busy { worker })
                }
            }
        }
        Ok(Gather::over(answers, now))
    }

    /// Waits until `deadline` instead (questions the workers answer over many loop passes).
    pub fn with_deadline(mut self, deadline: Instant) -> Gather<T> {
        self.deadline = deadline;
        self
    }

    /// Waits for answers on `answers`, one per worker, for [`WORKER_TIMEOUT`].
    pub fn over(answers: Vec<Option<Receiver<T>>>, now: Instant) -> Gather<T> {
        Self::until(answers, now + WORKER_TIMEOUT)
    }

    /// Waits for answers on `answers` until `deadline`.
    pub fn until(answers: Vec<Option<Receiver<T>>>, deadline: Instant) -> Gather<T> {
        Gather {
            got: answers.iter().map(|_| None).collect(),
            answers,
            deadline,
        }
    }

    /// Takes what arrived. `Some(Ok)` once every worker answered; `Some(Err)` naming the first
    /// worker still silent at the deadline; `None` meanwhile.
    pub fn poll(&mut self, now: Instant) -> Option<Result<Vec<T>, WorkerQueryError>> {
        for (a, g) in self.answers.iter_mut().zip(&mut self.got) {
            if let Some(rx) = a {
                if let Ok(v) = rx.try_recv() {
                    *g = Some(v);
                    *a = None;
                }
            }
        }
        if self.answers.iter().all(Option::is_none) {
            return Some(Ok(self.got.iter_mut().filter_map(Option::take).collect()));
        }
        if now >= self.deadline {
            let worker = self.silent().first().copied().unwrap_or(0);
            return Some(Err(WorkerQueryError::NoAnswer { worker }));
        }
        None
    }

    /// The workers that have not answered yet.
    pub fn silent(&self) -> Vec<usize> {
        self.answers
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_some())
            .map(|(w, _)| w)
            .collect()
    }

    /// The answers so far, by worker (`None`: not yet).
    pub fn take_partial(&mut self) -> Vec<Option<T>> {
        self.got.iter_mut().map(Option::take).collect()
    }
}

/// A question to the workers waiting for its answers, and how to turn them into a reply.
pub struct Question {
    pub ticket: Ticket,
    pub kind: QuestionKind,
}

pub enum QuestionKind {
    Affinity(Gather<Vec<super::api::AffinityRow>>),
    Flush(Gather<usize>),
}

/// Who asked for a reload: a control client (its reply goes back to it) or SIGHUP (its reply
/// goes to the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Socket(Ticket),
    Signal,
}

/// The requests answered later, and the tickets they are known by.
#[derive(Default)]
pub struct Deferred {
    last_ticket: u64,
    pub questions: Vec<Question>,
    /// Reloads asked for in this round, started by the control loop after the socket poll.
    pub reloads: Vec<Origin>,
}

impl Deferred {
    pub fn ticket(&mut self) -> Ticket {
        self.last_ticket += 1;
        Ticket(self.last_ticket)
    }

    /// Takes the questions whose answers are complete (or late): (ticket, reply).
    pub fn poll_questions(&mut self, now: Instant) -> Vec<(Ticket, Reply)> {
        let mut done = Vec::new();
        self.questions.retain_mut(|q| {
            let reply = match &mut q.kind {
                QuestionKind::Affinity(g) => g.poll(now).map(|r| match r {
                    Ok(rows) => super::api::affinity_reply(rows.into_iter().flatten().collect()),
                    Err(e) => Reply::Error(e.to_string()),
                }),
                QuestionKind::Flush(g) => g.poll(now).map(|r| match r {
                    Ok(n) => Reply::Ok(serde_json::json!({"removed": n.iter().sum::<usize>()})),
                    Err(e) => Reply::Error(e.to_string()),
                }),
            };
            match reply {
                Some(r) => {
                    done.push((q.ticket, r));
                    false
                }
                None => true,
            }
        });
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_completes_when_every_worker_answered_and_names_the_silent_one() {
        let t0 = Instant::now();
        let (tx0, rx0) = bounded(1);
        let (_tx1, rx1) = bounded::<u32>(1);
        let mut g = Gather::over(vec![Some(rx0), Some(rx1)], t0);
        assert!(g.poll(t0).is_none());
        tx0.send(7).unwrap();
        assert!(g.poll(t0).is_none());
        assert_eq!(g.silent(), vec![1]);
        match g.poll(t0 + WORKER_TIMEOUT) {
            Some(Err(WorkerQueryError::NoAnswer { worker: 1 })) => {}
            other => panic!("{:?}", other.map(|r| r.map(|v| v.len()))),
        }
        let (tx, rx) = bounded(1);
        let mut g = Gather::over(vec![Some(rx)], t0);
        tx.send(3u32).unwrap();
        assert_eq!(g.poll(t0).unwrap().unwrap(), vec![3]);
    }

    #[test]
    fn a_worker_still_holding_a_question_is_busy_at_once() {
        let (q, _keep) = bounded(1);
        let queries = vec![q];
        let ask = |now| {
            Gather::<usize>::ask(&queries, now, |reply| WorkerQuery::Flush {
                client: None,
                reply,
            })
        };
        assert!(ask(Instant::now()).is_ok());
        assert!(matches!(
            ask(Instant::now()),
            Err(WorkerQueryError::Busy { worker: 0 })
        ));
    }
}

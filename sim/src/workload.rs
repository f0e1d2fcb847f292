//! Workloads: what users do, as a time-ordered stream of [`WorkEvent`]s. Two sources
//! produce the same stream type: the [`Generator`] (seeded distributions) and a
//! recorded [`Trace`](crate::trace::Trace). The simulator cannot tell them apart, which
//! is what makes "generate a trace, replay it" give the same bytes as generating.

use payperplay_core::{MS_PER_DAY, MS_PER_HOUR, MS_PER_MINUTE, Timestamp};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::dist::{Dist, round_u32, round_u64};
use crate::scenario::{Scenario, Workload};

/// Dense indices: users and servers are numbered from 0 in order of creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkEvent {
    RegisterUser {
        user: u32,
    },
    TopUp {
        user: u32,
        amount_micros: i64,
    },
    CreateServer {
        server: u32,
        owner: u32,
        ram_mib: u32,
        /// The owner plays at a regular time of day (for pre-warm measurements).
        regular: bool,
    },
    /// Players arrive at a server and play for `length_ms` once it runs.
    Session {
        server: u32,
        players: u32,
        length_ms: u64,
    },
    /// A start without players (from the API).
    StartRequested {
        server: u32,
    },
    StopRequested {
        server: u32,
    },
}

/// Independent random streams of the generator, derived from the master seed.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    Arrivals = 1,
    ServerChoice = 2,
    SessionLength = 3,
    Players = 4,
    Tiers = 5,
    Provider = 6,
    ServerTiming = 7,
    Habits = 8,
    Faults = 9,
    Patience = 10,
}

pub fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    use rand::SeedableRng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

pub fn stream(seed: u64, s: Stream) -> ChaCha8Rng {
    rng_for(seed, s as u64)
}

const HOURS_PER_WEEK: usize = 7 * 24;

/// Sessions arrive as a non-homogeneous Poisson process (thinning against the
/// profile's peak rate) on uniformly chosen servers; owners with regular habits add
/// one session a day around their usual time.
pub struct Generator {
    spec: Workload,
    start: Timestamp,
    end: Timestamp,
    t: Timestamp,
    n_servers: u32,
    rate_max_per_ms: f64,
    /// The profile's rate for each hour of the week, hour 0 being Thursday 00:00 (the
    /// weekday of 1970-01-01): `sessions_per_hour × daily × weekly`, built once with the
    /// same products in the same order as per draw, so the same bits.
    week_rates_per_hour: [f64; HOURS_PER_WEEK],
    rng_arrivals: ChaCha8Rng,
    rng_choice: ChaCha8Rng,
    rng_length: ChaCha8Rng,
    rng_players: ChaCha8Rng,
    rng_habits: ChaCha8Rng,
    /// The next Poisson session, drawn ahead.
    next_poisson: Option<(Timestamp, WorkEvent)>,
    /// Servers with regular habits and their usual minute of the day.
    regulars: Vec<(u32, u64)>,
    /// With habits, Poisson sessions go to the other servers only (a regular owner's
    /// server is played at the regular time); empty: any server.
    irregulars: Vec<u32>,
    /// Today's habitual sessions, latest first (popped from the back).
    habit_day: Vec<(Timestamp, WorkEvent)>,
    habit_next_day: Timestamp,
}

impl Generator {
    /// The set-up (users, balances, servers at the start) and the stream after it.
    pub fn new(scenario: &Scenario) -> (Vec<WorkEvent>, Generator) {
        let g = &scenario.workload;
        let seed = scenario.seed;
        let start = scenario.start();
        let mut rng_tiers = stream(seed, Stream::Tiers);
        let mut rng_habits = stream(seed, Stream::Habits);
        let total_weight: f64 = g.tiers.iter().map(|t| t.weight).sum();
        let mut setup = Vec::new();
        let mut regulars = Vec::new();
        let mut irregulars = Vec::new();
        let mut n_servers = 0u32;
        for user in 0..g.users {
            setup.push(WorkEvent::RegisterUser { user });
            if g.initial_balance_micros > 0 {
                setup.push(WorkEvent::TopUp {
                    user,
                    amount_micros: g.initial_balance_micros,
                });
            }
            for _ in 0..g.servers_per_user {
                let mut pick = rng_tiers.random::<f64>() * total_weight;
                let tier = g
                    .tiers
                    .iter()
                    .find(|t| {
                        pick -= t.weight;
                        pick < 0.0
                    })
                    .unwrap_or(g.tiers.last().expect("validated: tiers not empty"));
                let regular = g
                    .habits
                    .as_ref()
                    .is_some_and(|h| rng_habits.random::<f64>() * 100.0 < h.servers_pct);
                if let (true, Some(h)) = (regular, g.habits.as_ref()) {
                    let minute = rng_habits.random_range(h.from_minute..=h.to_minute);
                    regulars.push((n_servers, minute));
                } else {
                    irregulars.push(n_servers);
                }
                setup.push(WorkEvent::CreateServer {
                    server: n_servers,
                    owner: user,
                    ram_mib: tier.gb * 1024,
                    regular,
                });
                n_servers += 1;
            }
        }
        // Surges may overlap: their product bounds the rate.
        let surge_max: f64 = g.surges.iter().map(|s| s.factor.max(1.0)).product();
        let rate_max_per_ms = g.sessions_per_hour
            * g.daily_profile.iter().cloned().fold(0.0, f64::max)
            * g.weekly_profile.iter().cloned().fold(0.0, f64::max)
            * surge_max
            / MS_PER_HOUR as f64;
        let week_rates_per_hour = std::array::from_fn(|i| {
            let (hour, weekday) = (i % 24, (i / 24 + 3) % 7);
            g.sessions_per_hour * g.daily_profile[hour] * g.weekly_profile[weekday]
        });
        let mut generator = Generator {
            spec: g.clone(),
            start,
            end: start.plus_ms(scenario.duration_ms),
            t: start,
            n_servers,
            rate_max_per_ms,
            week_rates_per_hour,
            rng_arrivals: stream(seed, Stream::Arrivals),
            rng_choice: stream(seed, Stream::ServerChoice),
            rng_length: stream(seed, Stream::SessionLength),
            rng_players: stream(seed, Stream::Players),
            rng_habits,
            next_poisson: None,
            irregulars: if g.habits.is_some() { irregulars } else { Vec::new() },
            regulars,
            habit_day: Vec::new(),
            habit_next_day: start,
        };
        generator.next_poisson = generator.draw_poisson();
        (setup, generator)
    }

    pub fn n_servers(&self) -> u32 {
        self.n_servers
    }

    fn rate_at(&self, t: Timestamp) -> f64 {
        // 1970-01-01 was a Thursday, index 3 of the Monday-first week: hour 0 of the
        // table is Thursday's, so the epoch's hours index it directly.
        let hour_of_week = (t.ms() / MS_PER_HOUR) % HOURS_PER_WEEK as u64;
        let rate = self.week_rates_per_hour[hour_of_week as usize];
        let g = &self.spec;
        if g.surges.is_empty() {
            return rate / MS_PER_HOUR as f64;
        }
        let since = t.since(self.start);
        let surge: f64 = g.surges.iter().map(|s| s.factor_at(since)).product();
        rate * surge / MS_PER_HOUR as f64
    }

    fn draw_poisson(&mut self) -> Option<(Timestamp, WorkEvent)> {
        loop {
            let u: f64 = self.rng_arrivals.random();
            let gap_ms = (-(1.0 - u).ln() / self.rate_max_per_ms).max(0.0);
            self.t = self.t.plus_ms(round_u64(gap_ms));
            if self.t > self.end {
                return None;
            }
            let accept: f64 = self.rng_arrivals.random();
            if accept * self.rate_max_per_ms <= self.rate_at(self.t) {
                break;
            }
        }
        let server = if self.irregulars.is_empty() {
            self.rng_choice.random_range(0..self.n_servers)
        } else {
            self.irregulars[self.rng_choice.random_range(0..self.irregulars.len())]
        };
        let length_ms = self
            .spec
            .session_minutes
            .sample_ms(&mut self.rng_length, MS_PER_MINUTE as f64);
        let players = round_u32(self.spec.players.sample(&mut self.rng_players)).max(1);
        Some((
            self.t,
            WorkEvent::Session {
                server,
                players,
                length_ms,
            },
        ))
    }

    /// Draw the habitual sessions of the day starting at `habit_next_day`.
    fn plan_habit_day(&mut self) {
        let Some(habits) = self.spec.habits.clone() else {
            self.habit_next_day = Timestamp(u64::MAX);
            return;
        };
        let day = self.habit_next_day;
        let mut sessions = Vec::new();
        for &(server, minute) in &self.regulars {
            if self.rng_habits.random::<f64>() * 100.0 >= habits.days_pct {
                continue;
            }
            let jitter = habits.jitter_ms as i64;
            let offset = if jitter > 0 {
                self.rng_habits.random_range(-jitter..=jitter)
            } else {
                0
            };
            // Kept inside the day, so days never overlap and the stream stays in order.
            let at = (day.ms() as i64 + (minute * MS_PER_MINUTE) as i64 + offset)
                .clamp(day.ms() as i64, (day.ms() + MS_PER_DAY - 1) as i64) as u64;
            let length_ms = habits
                .session_minutes
                .sample_ms(&mut self.rng_habits, MS_PER_MINUTE as f64);
            let players = round_u32(self.spec.players.sample(&mut self.rng_habits)).max(1);
            sessions.push((
                Timestamp(at),
                WorkEvent::Session {
                    server,
                    players,
                    length_ms,
                },
            ));
        }
        // Latest first; ties keep the order of `regulars` (a stable sort, reversed).
        sessions.sort_by_key(|&(t, _)| t);
        sessions.reverse();
        self.habit_day = sessions;
        self.habit_next_day = day.plus_ms(MS_PER_DAY);
    }

    /// The next event, or `None` once the end of the run is reached.
    pub fn next_event(&mut self) -> Option<(Timestamp, WorkEvent)> {
        loop {
            let habit = self.habit_day.last().map(|&(t, _)| t);
            let poisson = self.next_poisson.map(|(t, _)| t);
            // A new day of habits is planned before anything at or after its start.
            if self.habit_next_day <= self.end && habit.is_none() && poisson.is_none_or(|t| t >= self.habit_next_day) {
                self.plan_habit_day();
                continue;
            }
            return match (poisson, habit) {
                (None, None) => None,
                (Some(p), h) if h.is_none_or(|h| p <= h) => {
                    let event = self.next_poisson.take();
                    self.next_poisson = self.draw_poisson();
                    event
                }
                _ => self.habit_day.pop().filter(|&(t, _)| t <= self.end),
            };
        }
    }
}

/// Where the simulator's workload comes from.
pub enum Source {
    Generator(Box<Generator>),
    Trace {
        events: std::sync::Arc<crate::trace::Trace>,
        next: usize,
    },
}

impl Source {
    pub fn next_event(&mut self) -> Option<(Timestamp, WorkEvent)> {
        match self {
            Source::Generator(g) => g.next_event(),
            Source::Trace { events, next } => {
                let event = events.events.get(*next).copied();
                *next += 1;
                event
            }
        }
    }
}

/// A distribution used when a field is absent.
pub fn default_session_minutes() -> Dist {
    Dist::Weibull {
        shape: 0.5,
        scale: 30.0,
    }
}

/// How long players wait for a start before they give up: a lognormal with median
/// 5 min and σ = 0.6. A normal boot (30-60 s) loses almost nobody (0.4% leave within
/// 1 min), 6% leave within 2 min, 88% within 10 min, nearly all within 30 min. The
/// Java client gives up joining a server after about 30 s, so a player who asked for
/// a start waits on the panel (as Aternos shows queue position and ETA): minutes, not
/// hours.
pub fn default_patience_seconds() -> Dist {
    Dist::Lognormal {
        median: 300.0,
        sigma: 0.6,
    }
}

-- Per sensor and UTC hour: robust hourly statistics and the baselines fitted from them.
-- Written by `oxy score`; read back as the stored baselines by incremental scoring and inference.
create table if not exists score_hourly (
    sensor_id       varchar   not null,
    hour            timestamp not null,  -- UTC hour start
    local_hour      integer   not null,  -- hour of day at the site (sensors.timezone)
    n               bigint    not null,  -- readings in the hour
    median          double,              -- median reading of the hour
    std             double,              -- standard deviation within the hour
    noise           double,              -- RMS of reading-to-reading steps / sqrt(2)
    spike_rms       double,              -- RMS of the spike residual (reading - level around it)
    quantum         double,              -- smallest non-zero reading-to-reading step (resolution)
    max_step        double,              -- largest reading-to-reading step (absolute)
    level_std       double,              -- std within the hour of the mean level around each
                                         --   reading (anomaly.context_level_window either side)
    baseline_median double,              -- median of this local hour over the previous days
    context_spread  double,              -- contextual spread: IQR / 1.349 of those daily medians
                                         --   (floored), (+) the local hour's within-hour
                                         --   std of the mean level around each reading
    baseline_days   bigint,              -- how many previous days the baseline holds
    hour_spread     double,              -- IQR / 1.349 of those daily medians (before any floor)
    typical_hours   bigint,              -- hours of the baseline window holding readings
    typical_std     double,              -- median hourly std over the baseline window
    typical_noise   double,              -- median hourly noise over the baseline window
    typical_spike   double,              -- median hourly spike_rms over the baseline window
    typical_quantum double,              -- smallest hourly quantum over the baseline window
    typical_jump    double,              -- median max_step of this local hour over previous days
    drift_level     double,              -- mean hourly residual over the drift window
    drift_z         double,              -- drift_level / typical day-to-day spread
    drift_relative  double,              -- weighted drift window residual / weighted baseline
    site_rel        double,              -- the site's shared movement: the median of its sensors'
                                         --   hourly medians relative to their 7-day baselines of
                                         --   the hour (0: no site); drift and contextual baselines
                                         --   move with it (weather moves a site)
    primary key (sensor_id, hour)
)

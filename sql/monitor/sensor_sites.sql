-- Every sensor with its site: the customer and the first $site_levels tag levels (weather,
-- tide or a bloom moves every probe of a site at once; a fault moves one). A sensor without a
-- deeper tag level, or $site_levels = 0, has no site (null). Inputs: `sensors`.
select
    sensor_id,
    case when $site_levels > 0 and len(levels) > $site_levels
        then customer || chr(31) || array_to_string(levels[1:$site_levels], chr(31))
    end as site
from sensors
order by sensor_id

-- Every sensor with its site, the group whose shared movement is no drift of one probe: the
-- customer and the first $site_levels tag levels (weather, tide or a plankton bloom moves
-- every probe of a pond farm or a RAS hall; biofouling fouls one). A sensor without a
-- deeper tag level, or $site_levels = 0, has no site (null). Inputs: `sensors`.
select
    sensor_id,
    bucket,
    timezone,
    case when $site_levels > 0 and len(levels) > $site_levels
        then customer || chr(31) || array_to_string(levels[1:$site_levels], chr(31))
    end as site
from sensors
order by sensor_id
